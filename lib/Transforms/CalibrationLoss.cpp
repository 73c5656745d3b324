//===- CalibrationLoss.cpp - the calibration's loss of windows -----------===//

#include "CalibrationLoss.h"

#include "sq/Support/Distributed.h"

namespace sq {

bool evalLoss(WindowLoss &objective, const Rotations &r,
              const std::vector<std::vector<int64_t>> &windows, int64_t count,
              int64_t seqlen, double &loss, std::string &error,
              std::vector<double> *windowLosses) {
  count = std::min<int64_t>(count, windows.size());
  std::vector<double> each(count, 0.0);
  // Whole groups of 8 (by window index) per process: a window's loss is
  // computed in the same batch however many processes share the work.
  auto [firstGroup, lastGroup] = distributed::share((count + 7) / 8);
  for (int64_t i = firstGroup * 8; i < std::min(lastGroup * 8, count); i += 8) {
    int64_t b = std::min<int64_t>(8, count - i);
    std::vector<const std::vector<int64_t> *> batch;
    for (int64_t j = 0; j < b; ++j)
      batch.push_back(&windows[i + j]);
    double l;
    std::vector<double> batchLosses;
    if (!objective.evaluate(r, batch, l, nullptr, error, &batchLosses))
      return false;
    if (int64_t(batchLosses.size()) != b) {
      error = "the executor returned " + std::to_string(batchLosses.size()) +
              " sequence losses for " + std::to_string(b) + " windows";
      return false;
    }
    std::copy(batchLosses.begin(), batchLosses.end(), each.begin() + i);
  }
  distributed::allReduceSum(each.data(), each.size());
  loss = 0;
  for (double l : each)
    loss += l;
  loss = count ? loss / double(count) : 0.0;
  if (windowLosses)
    *windowLosses = std::move(each);
  return true;
}

} // namespace sq
