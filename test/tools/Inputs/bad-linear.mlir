func.func @f() {
  %w = sq.weight dense_resource<w> : tensor<2xf32>
  %y = sq.linear %w, %w : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  return
}
