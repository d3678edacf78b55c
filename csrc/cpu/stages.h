// One parallel region per layer call: the CPU recurrence as a sequence of stages (pack the
// weights, then one or more stages per step), each cut into chunks that may run in any order and
// on any thread, and each stage starting only when the one before it is complete.
//
// Every worker owns a contiguous share of each stage's chunks, so that in a quiet machine it runs
// the same chunks step after step and their weights stay in its core's cache. A worker that has
// run its share takes unclaimed chunks from the others before it waits, and waits only for
// chunks that a running worker holds. So no worker ever waits for one that has not started (the
// region may get fewer threads than asked, or run them one after the other), and a worker that
// the OS deschedules, on a machine shared with other processes, delays at most the chunk it
// holds. A worker that waits longer than kSoloAfter for one takes the rest of the call alone:
// the others stop claiming and sleep until it is through, so a core that keeps being taken away
// no longer holds every step.
//
// The wait between stages spins (with the CPU's pause) and yields the core after
// kSpinsBeforeYield rounds; it never sleeps.
#pragma once

#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace packedrnn {
namespace cpu {

constexpr int kSpinsBeforeYield = 2000;
constexpr std::chrono::microseconds kSoloAfter{200};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#endif
}

// Runs stages 0..K-1 on `workers` threads. count(k): the chunks of stage k, the same on every
// call; work(k, c, w): chunk c of stage k, on worker w (w indexes per-worker scratch).
template <typename Count, typename Work>
void run_stages(int64_t workers, int64_t K, const Count& count, const Work& work) {
  struct alignas(64) Counter {
    std::atomic<int64_t> v{0};
  };
  // claims[i]: chunks of worker i's shares claimed so far, over all stages; done[i]: chunks worker i
  // finished. A stage k of counts n_i(k) per share is complete when sum(done) reaches the total of
  // the counts of stages 0..k.
  std::vector<Counter> claims(workers), done(workers);
  std::atomic<int64_t> solo{-1};
  // The others block until the solo worker is through: returned to the thread pool, they would
  // spin in its barrier, on the very core the solo worker may share with them.
  std::mutex mutex;
  std::condition_variable cv;
  bool through = false;
  auto await_solo = [&] {
    std::unique_lock<std::mutex> lock(mutex);
    cv.wait(lock, [&] { return through; });
  };

  auto worker = [&](int64_t me) {
    std::vector<int64_t> base(workers, 0);  // claims[i] at the start of this stage
    int64_t total = 0, mine = 0;            // chunks of stages 0..k; chunks this worker finished
    for (int64_t k = 0; k < K; ++k) {
      const int64_t n = count(k);
      auto share = [&](int64_t i) { return n * i / workers; };  // worker i owns [share(i), share(i+1))
      for (int64_t step = 0; step < workers; ++step) {
        const int64_t i = (me + step) % workers;
        const int64_t lo = share(i), size = share(i + 1) - lo;
        for (;;) {
          const int64_t s = solo.load(std::memory_order_relaxed);
          if (s >= 0 && s != me) {
            await_solo();
            return;
          }
          int64_t v = claims[i].v.load(std::memory_order_relaxed);
          bool got = false;
          while (v < base[i] + size && !(got = claims[i].v.compare_exchange_weak(v, v + 1, std::memory_order_acquire,
                                                                               std::memory_order_relaxed))) {
          }
          if (!got) break;
          work(k, lo + (v - base[i]), me);
          done[me].v.store(++mine, std::memory_order_release);
        }
      }
      for (int64_t i = 0; i < workers; ++i) base[i] += share(i + 1) - share(i);
      total += n;
      auto complete = [&] {
        int64_t sum = 0;
        for (int64_t i = 0; i < workers; ++i) sum += done[i].v.load(std::memory_order_acquire);
        return sum >= total;
      };
      if (complete()) continue;
      const auto start = std::chrono::steady_clock::now();
      for (int64_t spins = 1; !complete(); ++spins) {
        if (spins < kSpinsBeforeYield) {
          cpu_relax();
          continue;
        }
        std::this_thread::yield();
        if (solo.load(std::memory_order_relaxed) < 0 && std::chrono::steady_clock::now() - start > kSoloAfter) {
          int64_t none = -1;
          solo.compare_exchange_strong(none, me);
        }
      }
    }
    if (solo.load(std::memory_order_relaxed) == me) {
      std::lock_guard<std::mutex> lock(mutex);
      through = true;
      cv.notify_all();
    }
  };
  if (workers == 1) {
    worker(0);
    return;
  }
  // One task per worker; where the region runs fewer threads (nested in another region, say),
  // a task gets several workers' ids, and the first one's worker steals the others' chunks.
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t) { worker(begin); });
}

}  // namespace cpu
}  // namespace packedrnn
