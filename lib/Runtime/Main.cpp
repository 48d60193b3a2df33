//===- Main.cpp - The main() of a model executable ------------------------===//
//
// Part of Switchyard's runtime: what `moec --emit=exe` links in front of the
// compiled model. Usage (docs/Artifacts.md):
//
//   OUT [--weights W.safetensors | --seed N] [--save-weights W]
//       [--input x.npy | --batch B] [--output y.npy] [--stats stats.json]
//       [--bench N] [--threads N]
//
// Every failure prints one message naming the file and the problem and
// exits with status 1 (2 for a bad command line); output files are written
// only after the run succeeded, through a temporary file and a rename.
//
//===----------------------------------------------------------------------===//

#include "switchyard-c/Runtime.h"

#include "Formats.h"
#include "Model.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Support/xxhash.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>

extern "C" void omp_set_num_threads(int);
// Defined by the object moec compiles (docs/Artifacts.md).
extern "C" const char switchyard_manifest[];

using namespace llvm;
using namespace switchyard::runtime;

namespace {
struct Options {
  std::string weights, saveWeights, input, output, stats;
  uint64_t seed = 0;
  int64_t batch = 1, bench = 0, threads = 0;
  bool haveSeed = false, haveBatch = false;
};

const char *program = "model";

/// Whether paths `a` and `b` name one file that a second output would
/// overwrite: the same regular file when both exist (a device such as
/// /dev/null takes both), else the same absolute path.
bool sameFile(StringRef a, StringRef b) {
  bool same = false;
  if (!sys::fs::equivalent(a, b, same))
    return same && !isSpecialFile(a);
  SmallString<256> absA(a), absB(b);
  if (sys::fs::make_absolute(absA) || sys::fs::make_absolute(absB))
    return a == b;
  sys::path::remove_dots(absA, /*remove_dot_dot=*/true);
  sys::path::remove_dots(absB, /*remove_dot_dot=*/true);
  return absA == absB;
}

[[noreturn]] void die(const Twine &msg, int code = 1) {
  errs() << program << ": error: " << msg << "\n";
  std::exit(code);
}

void usage(raw_ostream &os) {
  os << "usage: " << program
     << " [--weights W.safetensors | --seed N] [--save-weights W]\n"
        "       [--input x.npy | --batch B] [--output y.npy] "
        "[--stats stats.json]\n"
        "       [--bench N] [--threads N]\n"
        "Runs the compiled model once on the input (or a seeded random input "
        "of\nB sequences) and prints a summary of the output and the "
        "statistics.\n";
}

/// More threads than any machine we run on has cores; libomp aborts when it
/// cannot create the threads asked for.
constexpr int64_t kMaxThreads = 1024;

Options parseArgs(int argc, char **argv) {
  Options o;
  static constexpr StringLiteral kPathOptions[] = {
      "--weights", "--save-weights", "--input", "--output", "--stats"};
  static constexpr StringLiteral kIntegerOptions[] = {"--seed", "--batch",
                                                      "--bench", "--threads"};
  llvm::StringSet<> given;
  for (int i = 1; i < argc; ++i) {
    StringRef arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(outs());
      std::exit(0);
    }
    std::string value;
    StringRef name = arg;
    if (auto [n, v] = arg.split('='); n != arg && n.starts_with("--")) {
      name = n;
      value = v.str();
    } else if (arg.starts_with("--")) {
      if (llvm::is_contained(kPathOptions, arg) ||
          llvm::is_contained(kIntegerOptions, arg)) {
        if (i + 1 >= argc)
          die("option '" + arg + "' needs a value (see --help)", 2);
        value = argv[++i];
      }
    } else {
      die("unexpected argument '" + arg + "' (see --help)", 2);
    }
    if (!llvm::is_contained(kPathOptions, name) &&
        !llvm::is_contained(kIntegerOptions, name))
      die("unknown option '" + name + "' (see --help)", 2);
    if (!given.insert(name).second)
      die("option '" + name + "' is given twice", 2);
    // An empty path (an unset shell variable) is not "no path".
    if (llvm::is_contained(kPathOptions, name) && value.empty())
      die("option '" + name + "' needs a non-empty path", 2);
    auto integer = [&](int64_t min, int64_t max = INT64_MAX) {
      int64_t v;
      if (StringRef(value).getAsInteger(10, v) || v < min || v > max) {
        std::string range = max == INT64_MAX
                                ? ">= " + std::to_string(min)
                                : "in [" + std::to_string(min) + ", " +
                                      std::to_string(max) + "]";
        die("option '" + name + "' needs an integer " + range + ", got '" +
                value + "'",
            2);
      }
      return v;
    };
    if (name == "--weights")
      o.weights = value;
    else if (name == "--save-weights")
      o.saveWeights = value;
    else if (name == "--input")
      o.input = value;
    else if (name == "--output")
      o.output = value;
    else if (name == "--stats")
      o.stats = value;
    else if (name == "--seed") {
      // Any 64-bit seed, as the C API and the Python package take.
      if (StringRef(value).getAsInteger(10, o.seed))
        die("option '--seed' needs an integer in [0, 2^64), got '" + value +
                "'",
            2);
      o.haveSeed = true;
    } else if (name == "--batch") {
      o.batch = integer(1);
      o.haveBatch = true;
    } else if (name == "--bench")
      o.bench = integer(1);
    else if (name == "--threads")
      o.threads = integer(1, kMaxThreads);
  }
  if (!o.weights.empty() && o.haveSeed)
    die("--weights and --seed exclude each other: the seed draws random "
        "weights",
        2);
  if (!o.input.empty() && o.haveBatch)
    die("--input and --batch exclude each other: the input's shape gives the "
        "batch",
        2);
  // Two outputs written to one file would leave only the last.
  const std::pair<StringRef, const std::string *> outputs[] = {
      {"--output", &o.output},
      {"--stats", &o.stats},
      {"--save-weights", &o.saveWeights}};
  for (size_t i = 0; i < std::size(outputs); ++i)
    for (size_t j = i + 1; j < std::size(outputs); ++j)
      if (!outputs[i].second->empty() && !outputs[j].second->empty() &&
          sameFile(*outputs[i].second, *outputs[j].second))
        die("options '" + outputs[i].first + "' and '" + outputs[j].first +
                "' name the same file '" + *outputs[j].second + "'",
            2);
  return o;
}

/// The input as the model's dtype: f32 files convert to bf16/f16 models.
std::vector<char> loadInput(const Options &o, const Manifest &m,
                            int64_t &batch) {
  Expected<NpyArray> array = readNpy(o.input);
  if (!array)
    die(toString(array.takeError()));
  const TensorView &v = array->view;
  if (v.shape.size() != 3 || v.shape[1] != m.seqLen || v.shape[2] != m.dModel ||
      v.shape[0] < 1)
    die("'" + o.input + "': input has shape " + shapeString(v.shape) +
        ", expected [B, " + Twine(m.seqLen) + ", " + Twine(m.dModel) +
        "] with B >= 1");
  batch = v.shape[0];
  int64_t count = batch * m.seqLen * m.dModel;
  std::vector<char> out(count * dtypeSize(m.dtype));
  if (v.dtype == m.dtype) {
    std::memcpy(out.data(), v.data, out.size());
    return out;
  }
  if (v.dtype != DType::F32)
    die("'" + o.input + "': input has dtype '" + array->descr +
        "', expected float32 ('<f4') or the model's " + dtypeName(m.dtype));
  for (int64_t i = 0; i < count; ++i) {
    float f;
    std::memcpy(&f, v.data + 4 * i, 4);
    uint16_t h = m.dtype == DType::BF16 ? floatToBF16(f) : floatToF16(f);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

float elementAsFloat(const char *data, DType t, int64_t i) {
  uint16_t h;
  float f;
  switch (t) {
  case DType::F32:
    std::memcpy(&f, data + 4 * i, 4);
    return f;
  case DType::BF16:
    std::memcpy(&h, data + 2 * i, 2);
    return bf16ToFloat(h);
  case DType::F16:
    std::memcpy(&h, data + 2 * i, 2);
    return f16ToFloat(h);
  case DType::I64:
    break;
  }
  return NAN;
}

/// One number as printf writes it.
std::string printed(const char *spec, double value) {
  char text[64];
  std::snprintf(text, sizeof text, spec, value);
  return text;
}

/// Whether the entry function returns statistic `stat` of block `block` (a
/// hand-written .mlir model may return only some, or none).
bool returns(const Manifest &m, size_t block, StringRef stat) {
  return llvm::any_of(m.results, [&](const Manifest::Result &r) {
    return r.block == int64_t(block) && r.stat == stat;
  });
}

void writeStats(raw_ostream &os, const Manifest &m, const RunStats &stats,
                int64_t batch) {
  json::OStream j(os, 2);
  j.object([&] {
    j.attribute("model", m.name);
    j.attribute("batch", batch);
    j.attributeArray("blocks", [&] {
      for (size_t i = 0; i < stats.blocks.size(); ++i) {
        const BlockStats &b = stats.blocks[i];
        j.object([&] {
          j.attribute("block", int64_t(i));
          j.attribute("kind", b.kind);
          if (!b.routed)
            return;
          auto number = [&](StringRef key, double v) {
            if (std::isfinite(v))
              j.attribute(key, v);
            else
              j.attribute(key, nullptr); // JSON has no NaN
          };
          // Only what the entry function returned.
          if (b.capacity >= 0)
            j.attribute("capacity", b.capacity);
          if (returns(m, i, "aux_loss"))
            number("aux_loss", b.auxLoss);
          if (returns(m, i, "z_loss"))
            number("z_loss", b.zLoss);
          if (!b.expertCounts.empty())
            j.attributeArray("expert_counts", [&] {
              for (int64_t c : b.expertCounts)
                j.value(c);
            });
          if (b.dropped >= 0)
            j.attribute("dropped", b.dropped);
          if (b.unrouted >= 0)
            j.attribute("unrouted", b.unrouted);
          if (std::isfinite(b.usage))
            j.attribute("usage", b.usage);
        });
      }
    });
  });
  os << "\n";
}
} // namespace

static int runMain(int argc, char **argv) {
  Options o = parseArgs(argc, argv);
  if (o.threads > 0)
    omp_set_num_threads(int(o.threads));

  // Refuse unwritable outputs before any work.
  for (const std::string *path : {&o.output, &o.stats, &o.saveWeights})
    if (!path->empty())
      if (Error e = checkWritable(*path))
        die(toString(std::move(e)));

  sy_model *model = nullptr;
  char *message = nullptr;
  sy_status status =
      o.weights.empty()
          ? sy_model_create_random(o.seed, &model, &message)
          : sy_model_create_from_file(o.weights.c_str(), &model, &message);
  if (status != SY_OK)
    die(message ? message : "cannot create the model");
  // Shapes and names for the input, the output and the summary.
  auto manifest = Manifest::parse(switchyard_manifest);
  if (!manifest)
    die(toString(manifest.takeError()));
  const Manifest &m = *manifest;

  int64_t batch = o.batch;
  if (m.batch >= 0 && !o.haveBatch)
    batch = m.batch;
  std::vector<char> input;
  if (!o.input.empty()) {
    input = loadInput(o, m, batch);
  } else {
    int64_t count, bytes;
    if (MulOverflow(batch, m.seqLen * m.dModel, count) ||
        MulOverflow(count, int64_t(dtypeSize(m.dtype)), bytes))
      die("out of memory: an input of " + Twine(batch) + " sequences [" +
          Twine(m.seqLen) + ", " + Twine(m.dModel) +
          "] is more bytes than a 64-bit size holds");
    input.resize(bytes);
    fillNormal(input.data(), m.dtype, count, o.seed, xxh3_64bits("input"), 0,
               1);
  }
  std::vector<char> output(input.size());

  sy_stats *stats = sy_stats_create(model);
  auto runOnce = [&] {
    if (sy_model_run(model, batch, input.data(), output.data(), stats,
                     &message) != SY_OK)
      die(message ? message : "the run failed");
  };
  auto start = std::chrono::steady_clock::now();
  runOnce();
  double firstMs = std::chrono::duration<double, std::milli>(
                       std::chrono::steady_clock::now() - start)
                       .count();
  double flops = sy_model_useful_flops(model, batch, stats);

  std::vector<double> times;
  for (int64_t i = 0; i < o.bench; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    runOnce();
    times.push_back(std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - t0)
                        .count());
  }

  // Outputs, only now that everything succeeded.
  if (!o.saveWeights.empty() &&
      sy_model_save_weights(model, o.saveWeights.c_str(), &message) != SY_OK)
    die(message);
  int64_t count = batch * m.seqLen * m.dModel;
  if (!o.output.empty()) {
    // numpy has no bf16: bf16 outputs are widened to f32 (exactly).
    std::vector<char> widened;
    TensorView view{m.dtype, {batch, m.seqLen, m.dModel}, output.data(),
                    output.size()};
    if (m.dtype == DType::BF16) {
      widened.resize(count * 4);
      for (int64_t i = 0; i < count; ++i) {
        float f = elementAsFloat(output.data(), m.dtype, i);
        std::memcpy(widened.data() + 4 * i, &f, 4);
      }
      view = {DType::F32, view.shape, widened.data(), widened.size()};
    }
    if (Error e = writeNpy(o.output, view))
      die(toString(std::move(e)));
  }
  // Read the stats back through the C API's view of this run.
  RunStats runStats;
  for (int64_t b = 0; b < sy_stats_num_blocks(stats); ++b) {
    sy_block_stats s;
    if (sy_stats_get(stats, b, &s, &message) != SY_OK)
      die(message);
    BlockStats bs;
    bs.kind = s.kind;
    bs.routed = s.routed;
    bs.capacity = s.capacity;
    bs.auxLoss = s.aux_loss;
    bs.zLoss = s.z_loss;
    bs.dropped = s.dropped;
    bs.unrouted = s.unrouted;
    bs.usage = s.usage;
    if (s.expert_counts)
      bs.expertCounts.assign(s.expert_counts, s.expert_counts + s.num_experts);
    runStats.blocks.push_back(std::move(bs));
  }
  if (!o.stats.empty()) {
    std::string text;
    raw_string_ostream os(text);
    writeStats(os, m, runStats, batch);
    if (Error e = writeFileAtomically(o.stats, {text}))
      die(toString(std::move(e)));
  }

  // The summary.
  double sum = 0, sumSq = 0, lo = INFINITY, hi = -INFINITY;
  int64_t nonFinite = 0;
  for (int64_t i = 0; i < count; ++i) {
    float f = elementAsFloat(output.data(), m.dtype, i);
    if (!std::isfinite(f)) {
      ++nonFinite;
      continue;
    }
    sum += f;
    sumSq += double(f) * f;
    lo = std::min<double>(lo, f);
    hi = std::max<double>(hi, f);
  }
  int64_t finite = count - nonFinite;
  double mean = finite ? sum / finite : NAN;
  double std = finite ? std::sqrt(std::max(0.0, sumSq / finite - mean * mean))
                      : NAN;
  outs() << format("%s: y [%lld, %lld, %lld] %s: mean %.6g, std %.6g, "
                   "min %.6g, max %.6g, %lld non-finite\n",
                   m.name.c_str(), (long long)batch, (long long)m.seqLen,
                   (long long)m.dModel, dtypeName(m.dtype).data(), mean, std,
                   lo, hi, (long long)nonFinite);
  for (auto [i, b] : llvm::enumerate(runStats.blocks)) {
    outs() << format("  block %zu %-13s", i, b.kind.c_str());
    // A layer in a loop or in a function called more than once.
    int64_t runs = m.blocks[i].runs;
    if (runs != 1)
      outs() << (runs < 0 ? std::string(" runs as often as the input decides;")
                          : " runs " + std::to_string(runs) + " times;");
    if (b.routed) {
      // Only what the entry function returned.
      SmallVector<std::string> parts;
      if (b.capacity >= 0)
        parts.push_back("capacity " + std::to_string(b.capacity));
      if (returns(m, i, "aux_loss"))
        parts.push_back(printed("aux_loss %.6g", b.auxLoss));
      if (returns(m, i, "z_loss"))
        parts.push_back(printed("z_loss %.6g", b.zLoss));
      if (b.dropped >= 0)
        parts.push_back("dropped " + std::to_string(b.dropped));
      if (b.unrouted >= 0)
        parts.push_back("unrouted " + std::to_string(b.unrouted));
      if (!b.expertCounts.empty())
        parts.push_back("kept per expert [" +
                        llvm::join(llvm::map_range(b.expertCounts,
                                                   [](int64_t c) {
                                                     return std::to_string(c);
                                                   }),
                                   ", ") +
                        "]");
      if (std::isfinite(b.usage))
        parts.push_back(printed("usage %.3f", b.usage));
      outs() << " "
             << (parts.empty() ? "(no statistics returned)"
                               : llvm::join(parts, ", "));
    }
    outs() << "\n";
  }
  if (std::isnan(flops))
    outs() << format("  first run %.3f ms (useful FLOPs unknown: the input "
                     "decides how often a layer runs)\n",
                     firstMs);
  else
    outs() << format("  first run %.3f ms, %.3f useful GFLOP, %.2f useful "
                     "GFLOP/s\n",
                     firstMs, flops * 1e-9, flops / (firstMs * 1e6));
  if (!times.empty()) {
    std::sort(times.begin(), times.end());
    double median = times.size() % 2
                        ? times[times.size() / 2]
                        : 0.5 * (times[times.size() / 2 - 1] +
                                 times[times.size() / 2]);
    double q1 = times[times.size() / 4], q3 = times[(3 * times.size()) / 4];
    outs() << format("  bench %lld runs: median %.3f ms (min %.3f, max %.3f, "
                     "IQR %.3f ms)",
                     (long long)times.size(), median, times.front(),
                     times.back(), q3 - q1);
    if (!std::isnan(flops))
      outs() << format(", %.2f useful GFLOP/s", flops / (median * 1e6));
    outs() << "\n";
  }
  sy_stats_destroy(stats);
  sy_model_destroy(model);
  return 0;
}

int main(int argc, char **argv) {
  program = argc > 0 ? argv[0] : "model";
  try {
    return runMain(argc, argv);
  } catch (const std::bad_alloc &) {
    die("out of memory");
  } catch (const std::length_error &) {
    die("out of memory (a buffer too large)");
  }
}
