// A weight declaring 4 x 10^10 floats (160 GB) backed by 16 bytes.
func.func @forward(%x: tensor<1x2x10000000000xf32>) -> tensor<1x2x4xf32> {
  %w = sq.weight dense_resource<w> : tensor<4x10000000000xf32>
  %y = sq.linear %x, %w : (tensor<1x2x10000000000xf32>, tensor<4x10000000000xf32>) -> tensor<1x2x4xf32>
  return %y : tensor<1x2x4xf32>
}
{-#
  dialect_resources: {
    builtin: {
      w: "0x040000000000803F000000000000000000000000"
    }
  }
#-}
