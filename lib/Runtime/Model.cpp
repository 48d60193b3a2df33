//===- Model.cpp - A compiled model, its weights and its runs -------------===//
//
// Part of Switchyard's runtime.
//
//===----------------------------------------------------------------------===//

#include "Model.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/xxhash.h"

#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>

#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

using namespace llvm;
using namespace switchyard::runtime;

//===----------------------------------------------------------------------===//
// Manifest
//===----------------------------------------------------------------------===//

Expected<Manifest> Manifest::parse(StringRef text) {
  auto bad = [](const Twine &msg) {
    return createStringError(inconvertibleErrorCode(),
                             "corrupt model manifest: " + msg);
  };
  Expected<json::Value> value = json::parse(text);
  if (!value)
    return bad(toString(value.takeError()));
  json::Path::Root root;
  Manifest m;
  const json::Object *o = value->getAsObject();
  if (!o)
    return bad("not an object");
  auto getDType = [&](const json::Object &obj, DType &out) {
    std::optional<StringRef> s = obj.getString("dtype");
    std::optional<DType> t = s ? parseDType(*s) : std::nullopt;
    if (t)
      out = *t;
    return t.has_value();
  };
  auto getShape = [](const json::Object &obj, std::vector<int64_t> &out) {
    const json::Array *a = obj.getArray("shape");
    if (!a)
      return false;
    for (const json::Value &d : *a) {
      std::optional<int64_t> i = d.getAsInteger();
      if (!i)
        return false;
      out.push_back(*i);
    }
    return true;
  };
  std::optional<StringRef> name = o->getString("name"),
                           entry = o->getString("entry");
  std::optional<int64_t> S = o->getInteger("seq_len"),
                         D = o->getInteger("d_model"),
                         B = o->getInteger("batch");
  if (!name || !entry || !S || !D || !B || !getDType(*o, m.dtype))
    return bad("missing a model field");
  m.name = name->str();
  m.entry = entry->str();
  m.seqLen = *S;
  m.dModel = *D;
  m.batch = *B;
  const json::Array *weights = o->getArray("weights"),
                    *results = o->getArray("results"),
                    *blocks = o->getArray("blocks");
  if (!weights || !results || !blocks)
    return bad("missing weights, results or blocks");
  for (const json::Value &v : *weights) {
    const json::Object *w = v.getAsObject();
    Weight weight;
    std::optional<StringRef> wname = w ? w->getString("name") : std::nullopt;
    if (!wname || !getShape(*w, weight.shape) || !getDType(*w, weight.dtype))
      return bad("bad weight entry");
    weight.name = wname->str();
    m.weights.push_back(std::move(weight));
  }
  for (const json::Value &v : *results) {
    const json::Object *r = v.getAsObject();
    Result result;
    std::optional<StringRef> rname = r ? r->getString("name") : std::nullopt;
    std::optional<int64_t> rank = r ? r->getInteger("rank") : std::nullopt;
    if (!rname || !rank || !getShape(*r, result.shape) ||
        !getDType(*r, result.dtype))
      return bad("bad result entry");
    result.name = rname->str();
    result.rank = *rank;
    result.block = r->getInteger("block").value_or(-1);
    result.stat = r->getString("stat").value_or("").str();
    m.results.push_back(std::move(result));
  }
  for (const json::Value &v : *blocks) {
    const json::Object *b = v.getAsObject();
    Block block;
    std::optional<StringRef> kind = b ? b->getString("kind") : std::nullopt;
    if (!kind)
      return bad("bad block entry");
    block.kind = kind->str();
    block.dFF = b->getInteger("d_ff").value_or(0);
    block.experts = b->getInteger("experts").value_or(1);
    block.slotsPerExpert = b->getInteger("slots_per_expert").value_or(1);
    block.topK = b->getInteger("top_k").value_or(1);
    block.gated = b->getBoolean("gated").value_or(false);
    block.group = b->getString("group").value_or("sequence").str();
    block.runs = b->getInteger("runs").value_or(1);
    m.blocks.push_back(std::move(block));
  }
  if (const json::Array *packed = o->getArray("prepack")) {
    for (const json::Value &v : *packed) {
      const json::Object *p = v.getAsObject();
      Packed entry;
      std::optional<int64_t> weight = p ? p->getInteger("weight") : std::nullopt;
      if (!weight || *weight < 0 || *weight >= int64_t(m.weights.size()) ||
          !getShape(*p, entry.shape))
        return bad("bad prepack entry");
      entry.weight = *weight;
      m.prepack.push_back(std::move(entry));
    }
  }
  if (m.results.empty() || m.results[0].rank != 3)
    return bad("result 0 is not the model output");
  return m;
}

//===----------------------------------------------------------------------===//
// Random weights
//===----------------------------------------------------------------------===//

namespace {
/// splitmix64: tiny, fast, and good enough to initialize weights.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (next() >> 11) * 0x1.0p-53; }
};
} // namespace

void switchyard::runtime::fillNormal(void *out, DType dtype, int64_t count,
                                     uint64_t seed, uint64_t stream,
                                     double mean, double scale) {
  SplitMix64 rng{seed * 0x2545f4914f6cdd1dull ^ stream};
  for (int64_t i = 0; i < count; i += 2) {
    // Box-Muller: two normals from two uniforms.
    double u1 = rng.uniform(), u2 = rng.uniform();
    double r = std::sqrt(-2.0 * std::log(1.0 - u1));
    double pair[2] = {r * std::cos(2 * M_PI * u2), r * std::sin(2 * M_PI * u2)};
    for (int64_t j = 0; j < 2 && i + j < count; ++j) {
      float v = static_cast<float>(mean + scale * pair[j]);
      switch (dtype) {
      case DType::F32:
        static_cast<float *>(out)[i + j] = v;
        break;
      case DType::BF16:
        static_cast<uint16_t *>(out)[i + j] = floatToBF16(v);
        break;
      case DType::F16:
        static_cast<uint16_t *>(out)[i + j] = floatToF16(v);
        break;
      case DType::I64:
        static_cast<int64_t *>(out)[i + j] = static_cast<int64_t>(v);
        break;
      }
    }
  }
}

void Model::requestTileState() {
#if defined(__linux__) && defined(__x86_64__)
  static std::once_flag once;
  std::call_once(once, [] {
    // arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); it fails
    // harmlessly where there is no AMX.
    constexpr int kReqXcompPerm = 0x1023, kXtileData = 18;
    (void)syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData);
  });
#endif
}

void Model::randomWeights(uint64_t seed) {
  owned.clear();
  weightData.clear();
  file.reset();
  for (const Manifest::Weight &w : manifest.weights) {
    int64_t count = cantFail(elementCount(w.shape, w.name));
    owned.emplace_back(std::max<size_t>(1, count * dtypeSize(w.dtype)));
    StringRef name = w.name;
    double mean = 0.0, scale;
    if (name.ends_with("soft.scale")) {
      scale = 0.0;
      mean = 1.0;
    } else if (name.ends_with("norm.weight")) {
      mean = 1.0;
      scale = 0.1;
    } else if (name.ends_with(".bias") || name.ends_with(".b1") ||
               name.ends_with(".b2")) {
      scale = 0.1;
    } else {
      // Weights scaled like an initialized model: N(0, 1/fan_in).
      int64_t fanIn = w.shape.size() >= 2 ? w.shape[w.shape.size() - 2] : 1;
      scale = 1.0 / std::sqrt(double(fanIn));
    }
    fillNormal(owned.back().data(), w.dtype, count, seed, xxh3_64bits(name),
               mean, scale);
    weightData.push_back(owned.back().data());
  }
}

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

std::optional<Model::Failure> Model::loadWeights(StringRef path) {
  Expected<std::unique_ptr<SafeTensorsFile>> opened =
      SafeTensorsFile::open(path);
  if (!opened) {
    std::string msg = toString(opened.takeError());
    bool io = StringRef(msg).starts_with("cannot read");
    return Failure{io ? ErrorKind::IO : ErrorKind::Format, msg};
  }
  std::vector<const char *> data;
  std::vector<std::vector<char>> copies;
  for (const Manifest::Weight &w : manifest.weights) {
    auto fail = [&](const Twine &msg) {
      return Failure{ErrorKind::Weights,
                     "'" + path.str() + "': weight '" + w.name + "' " +
                         msg.str()};
    };
    const SafeTensorsFile::Entry *t = (*opened)->lookup(w.name);
    if (!t)
      return fail("is missing (the model needs " +
                  std::to_string(manifest.weights.size()) +
                  " weights; `moec --list-weights` or the artifact's "
                  "--save-weights shows their names)");
    if (!t->supported || t->view.dtype != w.dtype)
      return fail("has dtype " + t->dtypeName + ", expected " +
                  StringRef(w.dtype == DType::F32    ? "F32"
                            : w.dtype == DType::BF16 ? "BF16"
                                                     : "F16"));
    if (t->view.shape != w.shape)
      return fail("has shape " + shapeString(t->view.shape) + ", expected " +
                  shapeString(w.shape));
    const char *ptr = t->view.data;
    // The generated code loads whole elements: keep them aligned.
    if (reinterpret_cast<uintptr_t>(ptr) % dtypeSize(w.dtype)) {
      copies.emplace_back(ptr, ptr + t->view.bytes);
      ptr = copies.back().data();
    }
    data.push_back(ptr);
  }
  weightData = std::move(data);
  owned = std::move(copies);
  file = std::move(*opened);
  return std::nullopt;
}

std::optional<Model::Failure>
Model::bindBuffers(ArrayRef<const char *> names,
                   ArrayRef<const void *> buffers) {
  StringMap<const void *> byName;
  for (auto [name, buffer] : llvm::zip(names, buffers)) {
    if (!name || !buffer)
      return Failure{ErrorKind::Argument, "a weight name or buffer is NULL"};
    if (!byName.try_emplace(name, buffer).second)
      return Failure{ErrorKind::Argument,
                     "weight '" + std::string(name) + "' is given twice"};
  }
  std::vector<const char *> data;
  for (const Manifest::Weight &w : manifest.weights) {
    const void *buffer = byName.lookup(w.name);
    if (!buffer)
      return Failure{ErrorKind::Weights,
                     "weight '" + w.name + "' is missing from the buffers"};
    if (reinterpret_cast<uintptr_t>(buffer) % dtypeSize(w.dtype))
      return Failure{ErrorKind::Argument,
                     "the buffer of weight '" + w.name +
                         "' is not aligned to its element size"};
    byName.erase(w.name);
    data.push_back(static_cast<const char *>(buffer));
  }
  if (!byName.empty())
    return Failure{ErrorKind::Weights, "'" + byName.begin()->getKey().str() +
                                           "' is not a weight of this model"};
  weightData = std::move(data);
  owned.clear();
  file.reset();
  return std::nullopt;
}

std::optional<Model::Failure> Model::saveWeights(StringRef path) const {
  std::vector<NamedTensor> tensors;
  for (auto [w, data] : llvm::zip(manifest.weights, weightData)) {
    int64_t count = cantFail(elementCount(w.shape, w.name));
    tensors.push_back(
        {w.name, TensorView{w.dtype, w.shape, data,
                            size_t(count) * dtypeSize(w.dtype)}});
  }
  if (Error e = writeSafeTensors(path, tensors))
    return Failure{ErrorKind::IO, toString(std::move(e))};
  return std::nullopt;
}

//===----------------------------------------------------------------------===//
// Running
//===----------------------------------------------------------------------===//

namespace {
/// `{allocated, aligned, offset, sizes[r], strides[r]}` as 64-bit words.
std::vector<int64_t> descriptor(const void *data, ArrayRef<int64_t> shape) {
  std::vector<int64_t> words{reinterpret_cast<int64_t>(data),
                             reinterpret_cast<int64_t>(data), 0};
  words.insert(words.end(), shape.begin(), shape.end());
  std::vector<int64_t> strides(shape.size(), 1);
  for (int i = int(shape.size()) - 2; i >= 0; --i)
    strides[i] = strides[i + 1] * shape[i + 1];
  words.insert(words.end(), strides.begin(), strides.end());
  return words;
}

/// Whether the descriptor at `words` ({allocated, aligned, offset,
/// sizes, strides}) has sizes `shape` and row-major contiguous strides.
bool isContiguous(const int64_t *words, ArrayRef<int64_t> shape) {
  size_t rank = shape.size();
  std::vector<int64_t> expected = descriptor(nullptr, shape);
  return ArrayRef(words + 3, 2 * rank) == ArrayRef(expected).drop_front(3);
}

/// The `allocated` pointer memref.get_global lowers to (MemRefToLLVM): the
/// result is a constant, not a buffer to free.
constexpr int64_t kGlobalSentinel = 0xdeadbeef;

Model::Failure outOfMemory(unsigned long long bytes, const char *what) {
  return Model::Failure{Model::ErrorKind::Runtime,
                        "out of memory: " + std::string(what) +
                            " could not allocate " + std::to_string(bytes) +
                            " bytes"};
}
} // namespace

std::optional<Model::Failure> Model::packWeights() {
  packedAllocations.clear();
  packedData.assign(manifest.weights.size(), nullptr);
  if (manifest.prepack.empty())
    return std::nullopt;
  if (!prepack)
    return Failure{ErrorKind::Runtime, "the model lists packed weights but "
                                       "has no switchyard_prepack"};
  std::vector<std::vector<int64_t>> descs;
  size_t resultWords = 0;
  for (const Manifest::Packed &p : manifest.prepack) {
    const Manifest::Weight &w = manifest.weights[p.weight];
    descs.push_back(descriptor(weightData[p.weight], w.shape));
    resultWords += 3 + 2 * p.shape.size();
  }
  std::vector<int64_t> results(resultWords, 0);
  std::vector<void *> args{results.data()};
  for (auto &d : descs)
    args.push_back(d.data());
  if (unsigned long long bytes = callCompiled(prepack, args.data()))
    return outOfMemory(bytes, "packing the weights");

  std::optional<Failure> failure;
  size_t at = 0;
  for (const Manifest::Packed &p : manifest.prepack) {
    const int64_t *words = results.data() + at;
    at += 3 + 2 * p.shape.size();
    // The compiled code allocated the packed copy: it is ours to free.
    packedAllocations.emplace_back(reinterpret_cast<void *>(words[0]));
    if (!isContiguous(words, p.shape) || words[2] != 0) {
      if (!failure)
        failure = Failure{ErrorKind::Runtime,
                          "packed weight '" + manifest.weights[p.weight].name +
                              "' came back with shape " +
                              shapeString(ArrayRef(words + 3, p.shape.size())) +
                              ", expected contiguous " + shapeString(p.shape)};
      continue;
    }
    packedData[p.weight] = reinterpret_cast<const char *>(words[1]);
  }
  if (failure) {
    packedAllocations.clear();
    packedData.assign(manifest.weights.size(), nullptr);
  }
  return failure;
}

std::optional<Model::Failure> Model::run(int64_t batch, const void *input,
                                         void *output, RunStats *stats) const {
  const Manifest &m = manifest;
  if (!input || !output)
    return Failure{ErrorKind::Argument, "input and output must not be NULL"};
  if (batch < 1 || batch > (int64_t(1) << 40) / (m.seqLen * m.dModel))
    return Failure{ErrorKind::Argument,
                   "batch must be positive and fit in memory, got " +
                       std::to_string(batch)};
  if (m.batch >= 0 && batch != m.batch)
    return Failure{ErrorKind::Shape,
                   "this model was compiled for batch " +
                       std::to_string(m.batch) + ", got " +
                       std::to_string(batch)};
  if (weightData.size() != m.weights.size() ||
      packedData.size() != m.weights.size())
    return Failure{ErrorKind::Argument, "the model has no weights bound"};

  std::vector<std::vector<int64_t>> descs;
  descs.push_back(descriptor(input, {batch, m.seqLen, m.dModel}));
  for (auto [w, data] : llvm::zip(m.weights, weightData))
    descs.push_back(descriptor(data, w.shape));
  for (const Manifest::Packed &p : m.prepack)
    descs[1 + p.weight] = descriptor(packedData[p.weight], p.shape);
  size_t resultWords = 0;
  for (const Manifest::Result &r : m.results)
    resultWords += 3 + 2 * r.rank;
  std::vector<int64_t> results(resultWords, 0);
  std::vector<void *> args{results.data()};
  for (auto &d : descs)
    args.push_back(d.data());
  if (unsigned long long bytes = callCompiled(entry, args.data()))
    return outOfMemory(bytes, "the run");

  // Read the results back, then free what the compiled code allocated.
  DenseSet<int64_t> toFree;
  std::optional<Failure> failure;
  size_t at = 0;
  RunStats local;
  local.blocks.resize(m.blocks.size());
  for (auto [i, block] : llvm::enumerate(m.blocks)) {
    local.blocks[i].kind = block.kind;
    local.blocks[i].routed =
        block.kind == "moe" || block.kind == "expert_choice";
  }
  for (const Manifest::Result &r : m.results) {
    const int64_t *words = results.data() + at;
    at += 3 + 2 * r.rank;
    int64_t allocated = words[0];
    if (allocated && allocated != kGlobalSentinel &&
        allocated != reinterpret_cast<int64_t>(input) &&
        !llvm::is_contained(weightData, reinterpret_cast<const char *>(allocated)) &&
        !llvm::is_contained(packedData, reinterpret_cast<const char *>(allocated)))
      toFree.insert(allocated);
    ArrayRef<int64_t> sizes(words + 3, r.rank), strides(words + 3 + r.rank, r.rank);
    std::vector<int64_t> expect = r.shape;
    if (!expect.empty() && expect[0] < 0)
      expect[0] = batch;
    if (expect.size() != size_t(r.rank) || !isContiguous(words, expect)) {
      if (!failure)
        failure = Failure{ErrorKind::Runtime,
                          "result '" + r.name + "' came back with shape " +
                              shapeString(sizes) + " and strides " +
                              shapeString(strides) + ", expected contiguous " +
                              shapeString(expect)};
      continue;
    }
    const char *data = reinterpret_cast<const char *>(words[1]) +
                       words[2] * dtypeSize(r.dtype);
    int64_t count = cantFail(elementCount(expect, r.name));
    if (&r == &m.results[0]) {
      std::memcpy(output, data, count * dtypeSize(r.dtype));
      continue;
    }
    if (r.block < 0 || r.block >= int64_t(local.blocks.size()))
      continue;
    BlockStats &b = local.blocks[r.block];
    auto scalar = [&]() -> double {
      switch (r.dtype) {
      case DType::F32: {
        float f;
        std::memcpy(&f, data, 4);
        return f;
      }
      case DType::I64: {
        int64_t v;
        std::memcpy(&v, data, 8);
        return double(v);
      }
      default:
        return NAN;
      }
    };
    if (r.stat == "aux_loss")
      b.auxLoss = scalar();
    else if (r.stat == "z_loss")
      b.zLoss = scalar();
    else if (r.stat == "dropped")
      b.dropped = int64_t(scalar());
    else if (r.stat == "unrouted")
      b.unrouted = int64_t(scalar());
    else if (r.stat == "capacity")
      b.capacity = int64_t(scalar());
    else if (r.stat == "expert_counts" && r.dtype == DType::I64) {
      b.expertCounts.resize(count);
      std::memcpy(b.expertCounts.data(), data, count * 8);
    }
  }
  for (int64_t p : toFree)
    freeCompiled(reinterpret_cast<void *>(p));
  for (auto [b, block] : llvm::zip(local.blocks, m.blocks)) {
    int64_t groups = block.group == "batch" ? 1 : batch;
    double rows = double(b.expertCounts.size()) * b.capacity * groups;
    if (b.capacity > 0 && !b.expertCounts.empty())
      b.usage = double(std::accumulate(b.expertCounts.begin(),
                                       b.expertCounts.end(), int64_t(0))) /
                rows;
  }
  if (failure)
    return failure;
  if (stats)
    *stats = std::move(local);
  return std::nullopt;
}

double Model::usefulFlops(int64_t batch, const RunStats *stats) const {
  const Manifest &m = manifest;
  double D = m.dModel, tokens = double(batch) * m.seqLen, total = 0;
  for (auto [i, b] : llvm::enumerate(m.blocks)) {
    // A layer that runs a number of times only the input decides.
    if (b.runs < 0)
      return std::numeric_limits<double>::quiet_NaN();
    double F = b.dFF, E = b.experts, runs = b.runs;
    double perToken = 2 * D * F * (b.gated ? 2 : 1) + 2 * F * D;
    if (b.kind == "ffn") {
      total += runs * tokens * perToken;
    } else if (b.kind == "soft_moe") {
      double slots = E * b.slotsPerExpert;
      double groups = b.group == "batch" ? 1 : batch;
      double m = tokens / groups;
      // Logits, dispatch and combine products, then the expert MLPs.
      total += runs * groups * (3 * 2 * m * D * slots + slots * perToken);
    } else {
      double kept = tokens * b.topK;
      if (stats && i < stats->blocks.size() &&
          !stats->blocks[i].expertCounts.empty()) {
        kept = 0;
        for (int64_t c : stats->blocks[i].expertCounts)
          kept += c;
      }
      total += runs * (2 * tokens * D * E + kept * perToken);
    }
  }
  return total;
}
