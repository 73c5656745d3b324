//===- DistributedTest.cpp - the processes of a data-parallel calibration -===//
//
// share(): how a step's windows are split (every window once, contiguous
// blocks in rank order, sizes differing by at most one); and that a process
// started without a launcher is one process whose collectives change
// nothing. (Several processes: test/Transforms/spinquant-calibrate-mpi.test.)
//
//===----------------------------------------------------------------------===//

#include "sq/Support/Distributed.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

using namespace sq;

TEST(Distributed, SharesCoverEveryWindowOnceInBlocks) {
  for (int size = 1; size <= 7; ++size)
    for (int64_t count = 0; count <= 23; ++count) {
      int64_t next = 0, smallest = count, largest = 0;
      for (int rank = 0; rank < size; ++rank) {
        auto [begin, end] = distributed::share(count, rank, size);
        EXPECT_EQ(begin, next)
            << count << " over " << size << ", rank " << rank;
        EXPECT_LE(begin, end);
        smallest = std::min(smallest, end - begin);
        largest = std::max(largest, end - begin);
        next = end;
      }
      EXPECT_EQ(next, count) << count << " over " << size;
      EXPECT_LE(largest - smallest, 1) << count << " over " << size;
    }
  // The first count % size processes take the extra window.
  EXPECT_EQ(distributed::share(3, 0, 2), (std::pair<int64_t, int64_t>{0, 2}));
  EXPECT_EQ(distributed::share(3, 1, 2), (std::pair<int64_t, int64_t>{2, 3}));
  EXPECT_EQ(distributed::share(1, 1, 2), (std::pair<int64_t, int64_t>{1, 1}));
}

TEST(Distributed, WithoutALauncherOneProcess) {
  // ctest does not start this under mpirun.
  EXPECT_EQ(distributed::rank(), 0);
  EXPECT_EQ(distributed::size(), 1);
  EXPECT_EQ(distributed::share(5), (std::pair<int64_t, int64_t>{0, 5}));
  std::vector<double> d{1.5, -2.25, 3e-300};
  std::vector<float> f{1.5f, -0.0f};
  std::vector<int64_t> n{7, -9};
  distributed::allReduceSum(d.data(), d.size());
  distributed::reduceSum(d.data(), d.size());
  distributed::broadcast(d.data(), d.size());
  distributed::allReduceSum(f.data(), f.size());
  distributed::allReduceSum(n.data(), n.size());
  distributed::barrier();
  EXPECT_EQ(d, (std::vector<double>{1.5, -2.25, 3e-300}));
  EXPECT_EQ(f[0], 1.5f);
  EXPECT_TRUE(std::signbit(f[1]));
  EXPECT_EQ(n, (std::vector<int64_t>{7, -9}));
  EXPECT_EQ(distributed::exitCode(3), 3);
  EXPECT_EQ(distributed::exitCode(0), 0);
}
