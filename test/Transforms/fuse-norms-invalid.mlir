// A scaled RMSNorm whose output feeds anything but linear layers cannot be
// folded: the pass says which op is in the way.
// RUN: sq-opt %s --sq-fuse-norms -verify-diagnostics -o /dev/null

func.func @not_a_linear(%x: tensor<1x2x2xf32>) -> tensor<1x2x2xf32> {
  %g = sq.weight dense_resource<gamma2> : tensor<2xf32>
  %n = sq.rms_norm %x scale %g : tensor<1x2x2xf32>, tensor<2xf32>
  // expected-error@+1 {{reads a scaled RMSNorm; only linear layers can absorb its scale (--sq-fuse-norms)}}
  %a = sq.add %n, %x : tensor<1x2x2xf32>
  return %a : tensor<1x2x2xf32>
}
{-#
  dialect_resources: {
    builtin: {
      gamma2: "0x04000000000000400000003F"
    }
  }
#-}
