//===- QuantSpec.h - the --quantize=SPEC language ------------------*- C++
//-*-===//
//
// `none`, or `wXaYkvZ` or `wXaYkZvW` (bits of weights, activations, keys,
// values; 16 means "not quantized"; the KV part may be left out: 16), then
// comma-separated options mirroring the official SpinQuant flags:
//
//   wgroup=N (0: per channel)  wsym | wasym  wclip (MSE clip search)
//   gptq  nsamples=N  damp=F  block=N  actorder  (GPTQ instead of RTN)
//   asym | sym  aclip=R        (activations, per token)
//   kgroup=N vgroup=N kclip=R vclip=R   (KV cache, asymmetric; groups of
//                                        head_dim unless given)
//   mode=fake | real           (fake: float weights through quantize-
//                               dequantize; real: sq.qlinear, packed)
//   calib=FILE tokenizer=byte|sp:PATH|hf:DIR seqlen=N   (GPTQ calibration text)
//   head=8 | head=16           (lm_head: 8-bit symmetric per-channel
//                               weights and 8-bit per-token input, or
//                               float as SpinQuant keeps it: the default)
//
// Plain C++ (the fuzz target and the tools parse it too).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_TRANSFORMS_QUANTSPEC_H
#define SQ_TRANSFORMS_QUANTSPEC_H

#include <cstdint>
#include <string>

namespace sq {

struct QuantSpec {
  unsigned wBits = 16, aBits = 16, kBits = 16, vBits = 16;
  int64_t wGroup = 0;
  bool wSym = true, wClip = false;
  bool gptq = false, actOrder = false;
  int64_t nsamples = 128, block = 128;
  double damp = 0.01;
  bool aSym = false;
  double aClip = 1.0;
  int64_t kGroup = 0, vGroup = 0; ///< 0: head_dim
  double kClip = 1.0, vClip = 1.0;
  bool real = false;
  /// mode= was written (sq-compile packs weights, mode=real, unless told).
  bool modeGiven = false;
  std::string calib, tokenizer = "byte";
  int64_t seqlen = 0; ///< 0: the model's context, at most 2048
  /// lm_head: 16 keeps it in float (SpinQuant's choice, the default); 8
  /// quantizes its weight to int8 (symmetric, per output channel; RTN or
  /// GPTQ as the other linears) and its input to 8 bits per token.
  unsigned headBits = 16;

  /// The bit widths alone, every option at its default.
  static QuantSpec bits(unsigned w, unsigned a, unsigned k, unsigned v) {
    QuantSpec s;
    s.wBits = w;
    s.aBits = a;
    s.kBits = k;
    s.vBits = v;
    return s;
  }
  /// "none": nothing quantized (all 16 bits; str() spells it "none").
  static QuantSpec none() { return bits(16, 16, 16, 16); }
  bool quantizesNothing() const { return str() == "none"; }
  /// What the rotations of `--rotate=learned` train under when this spec is
  /// deployed: the bit widths (no options); with gptq, float weights (the
  /// official recipe trains before GPTQ). head=8 is not trained under:
  /// lm_head stays in float while the rotations learn.
  /// With `rtnWeights`, the deployed weight bits also under gptq
  /// (round-to-nearest in the loop as a proxy for GPTQ's weights).
  QuantSpec trainingSpec(bool rtnWeights = false) const {
    return bits(gptq && !rtnWeights ? 16 : wBits, aBits, kBits, vBits);
  }
  /// The same spec without its weight quantization: what the activations
  /// and the KV cache of a training model are fake-quantized with.
  QuantSpec activationsOnly() const {
    QuantSpec s = *this;
    s.wBits = 16;
    s.gptq = false;
    s.headBits = 16; // an 8-bit head is a weight quantization too
    return s;
  }
  bool quantizesWeights() const { return wBits < 16; }
  bool quantizesActivations() const { return aBits < 16; }
  bool quantizesHead() const { return headBits < 16; }
  /// The canonical spelling (round-trips through parseQuantSpec).
  std::string str() const;
};

/// Parses `text`; the one parser of the language: the command-line layer
/// (pass options through llvm::cl::parser<QuantSpec>, QuantSpecOption.h;
/// sq-compile's --quantize) calls it, and everything after that takes the
/// struct. On failure `error` names the bad part and lists the
/// accepted forms.
bool parseQuantSpec(const std::string &text, QuantSpec &spec,
                    std::string &error);

/// The accepted forms, for messages and --help.
const char *quantSpecHelp();

} // namespace sq

#endif // SQ_TRANSFORMS_QUANTSPEC_H
