// CPU emulator of CUDA launches (emulator/README.md): every CUDA thread is a fiber (ucontext)
// on one OS thread; a cooperative launch runs all its blocks at once, a plain one block by block.
// A fiber runs until it meets a barrier (__syncthreads, a warp-wide operation, grid.sync) or polls;
// the next one to run is the longest waiting (seed 0) or a random runnable one (a seeded
// generator: the same seed, the same interleaving), so code that relies on an order no barrier
// enforces shows as wrong values under some seed.
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "hardware_emu.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace emu {
namespace {

constexpr size_t kStack = 256 << 10;
constexpr size_t kGuard = 256;  // bytes past each block's shared memory, checked after the launch
constexpr unsigned char kGuardByte = 0xA5, kFreshByte = 0xFF;  // 0xFF..: NaN in every float type

struct Copy {
  unsigned char* dst;
  unsigned char data[16];
};

// An mbarrier as the bulk copies use it: one arrival per phase, a byte count, copies in flight.
struct MBar {
  unsigned phase = 0;  // parity of the current phase
  int pending = 1;     // arrivals still expected in it
  long long tx = 0;    // bytes announced and not yet landed (negative: landed before announced)
  std::vector<std::pair<unsigned char*, std::vector<unsigned char>>> copies;  // in flight
};

struct Fiber {
  ucontext_t ctx;
  unsigned tid = 0, bid = 0;
  std::vector<Copy> open;                 // cp.async copies not yet committed
  std::vector<std::vector<Copy>> groups;  // committed, oldest first
};

struct Barrier {
  int expected = 0, arrived = 0;
  unsigned gen = 0;
  std::vector<Fiber*> waiting;
};

struct Warp {
  Barrier bar;
  unsigned char box[2][32][32];  // warp_exchange, by parity of the barrier's generation
};

struct Block {
  Barrier bar;
  bool any[2] = {false, false};  // __syncthreads_or, by parity of the barrier's generation
  std::vector<Warp> warps;
  unsigned char* smem = nullptr;
};

struct Grid {
  std::vector<Fiber> fibers;
  std::vector<Block> blocks;
  Barrier bar;
  std::vector<Fiber*> runq;
  ucontext_t sched;
  Fiber* cur = nullptr;
  const std::function<void()>* body = nullptr;
  uint3 origin;  // blockIdx of the first block
  size_t smem = 0;
  int live = 0;
  long long idle_polls = 0;  // polls since a barrier last opened or a thread finished
  std::mt19937 rng;
  const char* failure = nullptr;
  std::unique_ptr<unsigned char[]> smem_all;
  std::map<void*, MBar> bars;  // by address in shared memory
};

Grid* G = nullptr;
int g_sms = 132, g_optin = 232448, g_major = 9;  // an H100/H200
unsigned g_seed = 0;
bool g_dry_run = false;  // launches record their size and return without running
int g_last_blocks = 0;
size_t g_last_smem = 0;

// Fiber stacks, kept from launch to launch (a plain launch starts a block of fibers per block).
char* stack(size_t i) {
  static std::vector<std::unique_ptr<char[]>> pool;
  while (pool.size() <= i) pool.emplace_back(new char[kStack]);
  return pool[i].get();
}

void switch_out() { swapcontext(&G->cur->ctx, &G->sched); }

void arrive(Barrier& b) {
  if (++b.arrived == b.expected) {
    G->idle_polls = 0;
    b.arrived = 0;
    ++b.gen;
    for (Fiber* f : b.waiting) G->runq.push_back(f);
    b.waiting.clear();
    return;
  }
  b.waiting.push_back(G->cur);
  switch_out();
}

void fiber_main() {
  (*G->body)();
  if (!G->cur->open.empty() || !G->cur->groups.empty()) fail("cp.async copies never waited for");
  --G->live;  // uc_link returns to the scheduler
  G->idle_polls = 0;
}

}  // namespace

int sm_count() { return g_sms; }
int shared_memory_optin() { return g_optin; }
int compute_major() { return g_major; }
void configure(int sms, int optin, unsigned seed) { g_sms = sms, g_optin = optin, g_seed = seed; }
void set_compute_major(int major) { g_major = major; }
void dry_run(bool on) { g_dry_run = on; }
void last_launch(int* blocks, size_t* smem) { *blocks = g_last_blocks, *smem = g_last_smem; }

Block& my_block() { return G->blocks[G->cur->bid]; }

void block_barrier() {
  Block& blk = my_block();
  // The last arrival clears the slot that the next generation uses: its readers (after the
  // previous barrier) have all arrived here since.
  if (blk.bar.arrived + 1 == blk.bar.expected) blk.any[(blk.bar.gen & 1) ^ 1] = false;
  arrive(blk.bar);
}
bool block_or(bool pred) {
  Block& blk = my_block();
  const unsigned par = blk.bar.gen & 1;
  blk.any[par] = blk.any[par] || pred;
  block_barrier();
  return blk.any[par];
}
void grid_barrier() { arrive(G->bar); }
void yield() {
  ++G->idle_polls;
  G->runq.push_back(G->cur);
  switch_out();
}

void warp_exchange(const void* mine, size_t bytes, void* all) {
  Warp& w = my_block().warps[threadIdx.x / 32];
  const unsigned par = w.bar.gen & 1;
  std::memcpy(w.box[par][threadIdx.x % 32], mine, bytes);
  arrive(w.bar);
  for (int l = 0; l < 32; ++l) std::memcpy(static_cast<unsigned char*>(all) + l * bytes, w.box[par][l], bytes);
}

unsigned char* shared_memory() { return my_block().smem; }

void copy_async(void* dst, const void* src) {
  if (g_seed != 0 && G->rng() % 2 == 0) {  // landed at once
    std::memcpy(dst, src, 16);
    return;
  }
  Copy c;
  c.dst = static_cast<unsigned char*>(dst);
  std::memcpy(c.data, src, 16);  // the source is not written while copies are in flight
  G->cur->open.push_back(c);
}

void commit_copies() {
  G->cur->groups.push_back(std::move(G->cur->open));
  G->cur->open.clear();
}

void wait_copies(int pending) {
  auto& groups = G->cur->groups;
  while ((int)groups.size() > pending) {
    for (const Copy& c : groups.front()) std::memcpy(c.dst, c.data, 16);
    groups.erase(groups.begin());
  }
}

namespace {
MBar* find_bar(void* bar) {
  auto it = G->bars.find(bar);
  if (it == G->bars.end()) {
    fail("mbarrier used before mbarrier.init");
    return nullptr;
  }
  return &it->second;
}
void complete_if_done(MBar& m) {
  if (m.pending == 0 && m.tx == 0) m.phase ^= 1, m.pending = 1;
}
}  // namespace

void bulk_init(void* bar) {
  if (!in_shared(bar, 8)) fail("mbarrier outside shared memory or not 8-byte aligned");
  G->bars[bar] = MBar();
}

void bulk_expect(void* bar, unsigned bytes) {
  MBar* m = find_bar(bar);
  if (m == nullptr) return;
  if (--m->pending < 0) fail("mbarrier: an arrival its phase did not expect");
  m->tx += bytes;
  complete_if_done(*m);
}

void bulk_copy(void* dst, const void* src, unsigned bytes, void* bar) {
  MBar* m = find_bar(bar);
  if (m == nullptr) return;
  const unsigned char* s = static_cast<const unsigned char*>(src);
  if (g_seed != 0 && G->rng() % 2 == 0) {  // landed at once
    std::memcpy(dst, src, bytes);
    m->tx -= bytes;
    complete_if_done(*m);
    return;
  }
  m->copies.emplace_back(static_cast<unsigned char*>(dst), std::vector<unsigned char>(s, s + bytes));
}

bool bulk_done(void* bar, unsigned parity) {
  MBar* m = find_bar(bar);
  if (m == nullptr) return true;
  for (auto& c : m->copies) {
    std::memcpy(c.first, c.second.data(), c.second.size());
    m->tx -= (long long)c.second.size();
  }
  m->copies.clear();
  complete_if_done(*m);
  if (m->phase != parity) return true;  // the phase of that parity has completed
  yield();
  return false;
}

bool fail(const char* what) {
  if (G->failure == nullptr) G->failure = what;
  return false;
}

bool in_shared(const void* p, size_t bytes) {
  const unsigned char* base = shared_memory();
  const unsigned char* q = static_cast<const unsigned char*>(p);
  return q >= base && q + bytes <= base + G->smem && reinterpret_cast<uintptr_t>(q) % bytes == 0;
}

namespace {
// Runs `blocks` blocks at once, the first at `origin` of `grid`.
int run(int blocks, int threads, size_t smem, const std::function<void()>& body, uint3 origin, dim3 grid) {
  Grid g;
  G = &g;
  g.body = &body;
  g.origin = origin;
  g.smem = smem;
  const size_t stride = (smem + kGuard + 63) / 64 * 64;
  g.smem_all.reset(new unsigned char[stride * blocks + 64]);
  unsigned char* base = g.smem_all.get() + (64 - reinterpret_cast<uintptr_t>(g.smem_all.get()) % 64);
  g.blocks.resize(blocks);
  for (int b = 0; b < blocks; ++b) {
    Block& blk = g.blocks[b];
    blk.bar.expected = threads;
    blk.warps.resize(threads / 32);
    for (Warp& w : blk.warps) w.bar.expected = 32;
    blk.smem = base + b * stride;
    std::memset(blk.smem, kFreshByte, smem);
    std::memset(blk.smem + smem, kGuardByte, kGuard);
  }
  g.bar.expected = blocks * threads;
  g.fibers.resize((size_t)blocks * threads);
  g.live = blocks * threads;
  for (size_t i = 0; i < g.fibers.size(); ++i) {
    Fiber& f = g.fibers[i];
    f.bid = (unsigned)(i / threads), f.tid = (unsigned)(i % threads);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stack(i);
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = &g.sched;
    makecontext(&f.ctx, fiber_main, 0);
    g.runq.push_back(&f);
  }
  gridDim = grid;
  blockDim = dim3(threads);
  g.rng.seed(g_seed);
  size_t head = 0;  // FIFO: runq[head..] are waiting
  // Every thread polling, round after round, while no barrier opens: a word that never arrives.
  const long long livelock = 1000LL * blocks * threads;
  while (head < g.runq.size() && g.idle_polls < livelock) {
    if (g_seed != 0) std::swap(g.runq[head], g.runq[head + g.rng() % (g.runq.size() - head)]);
    g.cur = g.runq[head++];
    if (head > 4096 && 2 * head > g.runq.size()) g.runq.erase(g.runq.begin(), g.runq.begin() + head), head = 0;
    threadIdx = {g.cur->tid, 0, 0};
    blockIdx = {origin.x + g.cur->bid, origin.y, origin.z};
    swapcontext(&g.sched, &g.cur->ctx);
  }
  int rc = 0;
  if (g.idle_polls >= livelock) {
    std::fprintf(stderr, "emu: livelock: threads poll for words that no thread writes\n");
    rc = 1;
  } else if (g.live != 0) {
    std::fprintf(stderr, "emu: deadlock: %d of %d threads never finished (grid barrier %d/%d arrived)\n", g.live,
                 blocks * threads, g.bar.arrived, g.bar.expected);
    rc = 1;
  }
  for (const auto& kv : g.bars) {
    if (!kv.second.copies.empty()) fail("bulk copies never waited for");
  }
  for (int b = 0; b < blocks; ++b) {
    const Block& blk = g.blocks[b];
    if (blk.bar.arrived != 0) fail("__syncthreads not reached by every thread of a block");
    for (size_t i = 0; i < kGuard; ++i) {
      if (blk.smem[smem + i] != kGuardByte) {
        fail("a write past the block's dynamic shared memory");
        break;
      }
    }
  }
  if (g.failure != nullptr) {
    std::fprintf(stderr, "emu: %s\n", g.failure);
    rc = 1;
  }
  G = nullptr;
  return rc;
}
}  // namespace

int launch(int blocks, int threads, size_t smem, const std::function<void()>& body) {
  if (threads % 32 != 0 || threads == 0 || blocks <= 0 || blocks > g_sms) {  // CUDA refuses empty grids too
    std::fprintf(stderr, "emu: bad launch (%d blocks of %d threads, %d SMs)\n", blocks, threads, g_sms);
    return 1;
  }
  g_last_blocks = blocks, g_last_smem = smem;
  if (g_dry_run) return 0;
  return run(blocks, threads, smem, body, {0, 0, 0}, dim3(blocks));
}

int launch_blocks(dim3 grid, int threads, const std::function<void()>& body) {
  if (threads % 32 != 0 || threads == 0 || grid.x * grid.y * grid.z == 0) {  // as CUDA's invalid configuration
    std::fprintf(stderr, "emu: bad launch (%ux%ux%u blocks of %d threads)\n", grid.x, grid.y, grid.z, threads);
    return 1;
  }
  g_last_blocks = (int)(grid.x * grid.y * grid.z), g_last_smem = 0;  // static shared memory only
  if (g_dry_run) return 0;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        if (const int rc = run(1, threads, 0, body, {x, y, z}, grid)) return rc;
      }
    }
  }
  return 0;
}

}  // namespace emu
