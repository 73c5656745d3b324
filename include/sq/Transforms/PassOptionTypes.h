//===- PassOptionTypes.h - typed values of the sq pass options ---*- C++
//-*-===//
//
// The modes of the passes' options are enums, not strings checked by hand:
// each enum below has one table of spellings (EnumSpelling<E>), and
// `llvm::cl::parser<E>` (TextOptionParser, shared with the other typed
// values: QuantSpec, the recipe's rotation choice) reads it for pass
// options, pipeline options and tool flags alike. A bad value is an option
// error that lists the accepted ones ("unknown schedule 'linear': expected
// cosine or constant").
//
//===----------------------------------------------------------------------===//

#ifndef SQ_TRANSFORMS_PASSOPTIONTYPES_H
#define SQ_TRANSFORMS_PASSOPTIONTYPES_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/raw_ostream.h"

#include <string>
#include <utility>

namespace sq {

/// spinquant-rotate mode=.
enum class RotationMode { Learned, Hadamard, Random, File };
/// spinquant-rotate init= (learned: the initial rotations).
enum class RotationInit { Hadamard, Random };
/// R3, the online rotation of Q and K after RoPE, in learned mode.
enum class R3Mode { Search, Cayley, Hadamard };
/// The learning-rate schedule of the Cayley steps.
enum class LRSchedule { Cosine, Constant };
/// How rewritten weights are stored: fp32 (exact: the rotated model computes
/// the same function as the original up to fp32 rounding) or in the
/// weight's own type (f16/bf16 models stay their size: one rounding to that
/// type per rewrite, as the official implementation does).
enum class WeightStorage { F32, Keep };
/// Where the learned calibration applies R1/R2 while training: folded into
/// a copy of every rotated weight at each step (Weights, needed when the
/// weights are quantized in the loop), or on the activations at the sites
/// where something is quantized (Activations: tokens x dim^2 per site, no
/// weight copies or weight gradients; only for 16-bit weights). Auto picks
/// Activations for specs with 16-bit weights, Weights otherwise.
enum class RotationApply { Auto, Weights, Activations };
/// The arithmetic of the calibration's products with the frozen weights
/// (and of its rotations on activations): fp32 (OpenBLAS) or bf16 on the
/// CPU's bf16 units with fp32 sums (sq::ExecPrecision). Auto: bf16 when the
/// model's linear weights are stored in 16 bits (bf16/f16: the file's own
/// precision, nothing to gain from fp32 products) and the CPU has AMX
/// (numerics::gemmDefaultPath(); AVX-512 BF16 alone can be slower than fp32
/// sgemm); fp32 otherwise (fp32 models, e.g. the small shared ones,
/// calibrate exactly as before).
enum class CalibPrecision { Auto, F32, BF16 };
/// Learned clipping in the calibration (beyond SpinQuant: FlatQuant's
/// learnable clipping thresholds, OmniQuant's learnable weight clipping):
/// none; the clip ratio of every activation and KV-cache quantizer (Acts);
/// one ratio per output channel of every weight fake-quantized in the loop
/// (Weights: round-to-nearest weights, apply=weights); or both (Learned:
/// each where the training quantizes).
enum class ClipLearning { None, Learned, Acts, Weights };
/// The calibration's loss: next-token cross-entropy on the text (ce, as
/// SpinQuant), or distillation from the float model: KL(p_float || p_quant)
/// over the whole vocabulary (kl) or over the float model's top-k tokens of
/// each position, both renormalized over them (kl-top, OSTQuant's KL-Top).
enum class CalibLoss { CrossEntropy, KL, KLTop };
/// Activation checkpointing of the calibration's backward pass
/// (sq::ExecCheckpoint): On keeps only the residual stream between
/// transformer blocks and recomputes each block's forward in the backward
/// (the same gradients bit for bit, one more forward); Auto turns it on
/// when the whole tape would exceed a quarter of the machine's memory (at
/// least 2 GiB).
enum class Checkpointing { Auto, On, Off };
/// spinquant-rotate scales= (learned mode): no diagonal scalings, or learned
/// ones at every exactly foldable site, trained with R1/R2 (ScaleSites.h).
enum class ScaleMode { None, Learned };
/// spinquant-rotate scales-init= (scales=learned): where the log-scales
/// start: 0 (s = 1) or balanced from the float model's statistics
/// (RotationObjective::smoothScales).
enum class ScaleInit { Ones, Smooth };

/// The spellings of an enum option and what a message calls it.
template <typename E> struct EnumSpelling;

#define SQ_ENUM_SPELLING(E, WHAT, ...)                                         \
  template <> struct EnumSpelling<E> {                                         \
    static constexpr const char *what = WHAT;                                  \
    static llvm::ArrayRef<std::pair<E, const char *>> values() {               \
      static const std::pair<E, const char *> table[] = {__VA_ARGS__};         \
      return table;                                                            \
    }                                                                          \
  };
SQ_ENUM_SPELLING(RotationMode, "spinquant-rotate mode",
                 {RotationMode::Random, "random"},
                 {RotationMode::Hadamard, "hadamard"},
                 {RotationMode::Learned, "learned"},
                 {RotationMode::File, "file"})
SQ_ENUM_SPELLING(RotationInit, "init", {RotationInit::Hadamard, "hadamard"},
                 {RotationInit::Random, "random"})
SQ_ENUM_SPELLING(R3Mode, "r3", {R3Mode::Search, "search"},
                 {R3Mode::Cayley, "cayley"}, {R3Mode::Hadamard, "hadamard"})
SQ_ENUM_SPELLING(LRSchedule, "schedule", {LRSchedule::Cosine, "cosine"},
                 {LRSchedule::Constant, "constant"})
SQ_ENUM_SPELLING(WeightStorage, "weight-type", {WeightStorage::F32, "f32"},
                 {WeightStorage::Keep, "keep"})
SQ_ENUM_SPELLING(RotationApply, "apply", {RotationApply::Auto, "auto"},
                 {RotationApply::Weights, "weights"},
                 {RotationApply::Activations, "activations"})
SQ_ENUM_SPELLING(CalibPrecision, "precision", {CalibPrecision::Auto, "auto"},
                 {CalibPrecision::F32, "fp32"}, {CalibPrecision::BF16, "bf16"})
SQ_ENUM_SPELLING(ClipLearning, "clip", {ClipLearning::None, "none"},
                 {ClipLearning::Learned, "learned"},
                 {ClipLearning::Acts, "acts"},
                 {ClipLearning::Weights, "weights"})
SQ_ENUM_SPELLING(CalibLoss, "loss", {CalibLoss::CrossEntropy, "ce"},
                 {CalibLoss::KL, "kl"}, {CalibLoss::KLTop, "kl-top"})
SQ_ENUM_SPELLING(Checkpointing, "checkpoint", {Checkpointing::Auto, "auto"},
                 {Checkpointing::On, "on"}, {Checkpointing::Off, "off"})
SQ_ENUM_SPELLING(ScaleMode, "scales", {ScaleMode::None, "none"},
                 {ScaleMode::Learned, "learned"})
SQ_ENUM_SPELLING(ScaleInit, "scales-init", {ScaleInit::Ones, "ones"},
                 {ScaleInit::Smooth, "smooth"})
#undef SQ_ENUM_SPELLING

/// The spelling of `value`.
template <typename E> const char *spell(E value) {
  for (const auto &v : EnumSpelling<E>::values())
    if (v.first == value)
      return v.second;
  return "?";
}

/// "a, b or c".
template <typename E> std::string enumChoices() {
  std::string s;
  auto values = EnumSpelling<E>::values();
  for (size_t i = 0; i < values.size(); ++i)
    s += std::string(i == 0                   ? ""
                     : i + 1 == values.size() ? " or "
                                              : ", ") +
         values[i].second;
  return s;
}

/// Parses a spelling; false (and `error`) for anything else.
template <typename E>
bool parseEnum(llvm::StringRef text, E &value, std::string &error) {
  for (const auto &v : EnumSpelling<E>::values())
    if (text == v.second) {
      value = v.first;
      return true;
    }
  error = std::string("unknown ") + EnumSpelling<E>::what + " '" + text.str() +
          "': expected " + enumChoices<E>();
  if (text.contains(','))
    error += " (pass options are separated by spaces: "
             "--spinquant-rotate=\"mode=hadamard seed=1\")";
  return false;
}

/// How a typed option value is read and spelled: specialize with
/// `static bool parse(llvm::StringRef, T &, std::string &error)`,
/// `static std::string str(const T &)` and `static constexpr const char
/// *valueName` (the enums above share one specialization, the QuantSpec and
/// the recipe's rotation choice have their own).
template <typename T> struct OptionText;

template <typename E> struct EnumOptionText {
  static bool parse(llvm::StringRef text, E &value, std::string &error) {
    return parseEnum(text, value, error);
  }
  static std::string str(E value) { return spell(value); }
  static constexpr const char *valueName = "value";
};

/// The llvm::cl parser of every OptionText type: pass options, pipeline
/// options and tool flags read it the same way; a bad value is an option
/// error with OptionText's message.
template <typename T>
class TextOptionParser : public llvm::cl::basic_parser<T> {
public:
  explicit TextOptionParser(llvm::cl::Option &o)
      : llvm::cl::basic_parser<T>(o) {}
  bool parse(llvm::cl::Option &o, llvm::StringRef argName, llvm::StringRef arg,
             T &value) {
    std::string error;
    if (!OptionText<T>::parse(arg, value, error))
      return o.error(error, argName);
    return false;
  }
  llvm::StringRef getValueName() const override {
    return OptionText<T>::valueName;
  }
  void printOptionDiff(const llvm::cl::Option &o, const T &value,
                       const llvm::cl::OptionValue<T> &, size_t width) const {
    this->printOptionName(o, width);
    llvm::outs() << "= " << OptionText<T>::str(value) << "\n";
  }
  static void print(llvm::raw_ostream &os, const T &value) {
    os << OptionText<T>::str(value);
  }
};

} // namespace sq

/// Makes T an llvm::cl option type read through sq::OptionText<T>.
#define SQ_TEXT_OPTION_PARSER(T)                                               \
  namespace llvm::cl {                                                         \
  template <> class parser<T> : public sq::TextOptionParser<T> {               \
  public:                                                                      \
    using sq::TextOptionParser<T>::TextOptionParser;                           \
  };                                                                           \
  }
#define SQ_ENUM_OPTION_PARSER(E)                                               \
  template <> struct sq::OptionText<E> : sq::EnumOptionText<E> {};             \
  SQ_TEXT_OPTION_PARSER(E)
SQ_ENUM_OPTION_PARSER(sq::RotationMode)
SQ_ENUM_OPTION_PARSER(sq::RotationInit)
SQ_ENUM_OPTION_PARSER(sq::R3Mode)
SQ_ENUM_OPTION_PARSER(sq::LRSchedule)
SQ_ENUM_OPTION_PARSER(sq::WeightStorage)
SQ_ENUM_OPTION_PARSER(sq::RotationApply)
SQ_ENUM_OPTION_PARSER(sq::CalibPrecision)
SQ_ENUM_OPTION_PARSER(sq::ClipLearning)
SQ_ENUM_OPTION_PARSER(sq::CalibLoss)
SQ_ENUM_OPTION_PARSER(sq::Checkpointing)
SQ_ENUM_OPTION_PARSER(sq::ScaleMode)
SQ_ENUM_OPTION_PARSER(sq::ScaleInit)
#undef SQ_ENUM_OPTION_PARSER

#endif // SQ_TRANSFORMS_PASSOPTIONTYPES_H
