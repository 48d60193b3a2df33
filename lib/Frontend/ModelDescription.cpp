//===- ModelDescription.cpp - Parse and validate a model description ------===//
//
// Part of Switchyard. The format is documented in docs/ModelDescription.md;
// the checks here are the ones it lists. Every error is one SourceMgr
// diagnostic that points at the offending key or value.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Frontend/ModelDescription.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/MemoryBufferRef.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/YAMLParser.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>

using namespace llvm;
using namespace switchyard;

namespace {

/// The largest size a single dimension may have; keeps every product of
/// sizes the compiler and runtime form far from int64 overflow.
constexpr int64_t kMaxDim = int64_t(1) << 24;
/// The largest number of elements one weight tensor may have (2^36: 256 GiB
/// of f32), so that element counts times bytes stay within int64.
constexpr int64_t kMaxElements = int64_t(1) << 36;

const char *const kLayers[] = {"moe", "expert_choice", "soft_moe", "ffn"};
const char *const kNorms[] = {"none", "rms", "layer"};
const char *const kActivations[] = {"relu",  "gelu",   "gelu_tanh",
                                    "silu",  "swiglu", "geglu"};
const char *const kDTypes[] = {"f32", "bf16", "f16"};
const char *const kOrders[] = {"sequence", "batch"};
const char *const kModelKeys[] = {"name", "d_model", "seq_len", "dtype",
                                  "blocks"};
const char *const kCommonKeys[] = {"layer", "norm",       "residual",
                                   "d_ff",  "activation", "bias"};
const char *const kMoEKeys[] = {
    "experts",         "router_bias",     "top_k",    "capacity_factor",
    "expert_capacity", "min_capacity",    "priority", "normalize_gates",
    "reroute_dropped", "group",           "aux_loss_weight",
    "z_loss_weight"};
const char *const kExpertChoiceKeys[] = {
    "experts",      "router_bias", "capacity_factor", "expert_capacity",
    "min_capacity", "group",       "z_loss_weight"};
const char *const kSoftMoEKeys[] = {"experts", "slots_per_expert", "normalize",
                                    "group"};

bool contains(ArrayRef<const char *> list, StringRef value) {
  return llvm::any_of(list, [&](const char *s) { return value == s; });
}

std::string joinQuoted(ArrayRef<const char *> list) {
  std::string out;
  for (auto [i, s] : llvm::enumerate(list)) {
    if (i)
      out += i + 1 == list.size() ? " or " : ", ";
    out += "'" + std::string(s) + "'";
  }
  return out;
}

/// The closest of `candidates` to `word`, if it is close enough to be a
/// plausible typo.
std::optional<StringRef> closest(StringRef word,
                                 ArrayRef<ArrayRef<const char *>> candidates) {
  std::optional<StringRef> best;
  unsigned bestDistance = std::max<unsigned>(2, word.size() / 3) + 1;
  for (ArrayRef<const char *> list : candidates)
    for (StringRef c : list) {
      unsigned d = word.edit_distance(c, /*AllowReplacements=*/true,
                                      bestDistance);
      if (d < bestDistance) {
        bestDistance = d;
        best = c;
      }
    }
  return best;
}

/// One `key: value` of a block, read in the single pass that llvm::yaml
/// allows, so that checks can look at the keys in any order.
struct Entry {
  std::string key;
  yaml::Node *keyNode = nullptr;
  yaml::Node *valueNode = nullptr;
  std::optional<std::string> scalar; ///< unset for a non-scalar value
  bool isNull = false;
};

class Parser {
public:
  Parser(StringRef text, StringRef bufferName)
      : text(text), stream(MemoryBufferRef(text, bufferName), sourceMgr,
                           /*ShowColors=*/false),
        fileName(bufferName.str()) {
    sourceMgr.setDiagHandler(
        [](const SMDiagnostic &diag, void *context) {
          auto *self = static_cast<Parser *>(context);
          if (self->message.empty()) {
            raw_string_ostream os(self->message);
            diag.print(nullptr, os, /*ShowColors=*/false);
            self->diagnostic = diag;
          }
        },
        this);
  }

  Expected<ModelDescription> parse();

private:
  /// Whether `loc` points into the description. A node that the YAML
  /// parser built while recovering from a syntax error (invalid UTF-8 in a
  /// flow mapping, say) can start elsewhere, and SourceMgr must not be
  /// asked where that is.
  bool inBuffer(SMLoc loc) const {
    return loc.isValid() && sourceMgr.FindBufferContainingLoc(loc) != 0;
  }

  /// Reports `msg` at `node` (only the first error is kept; without a
  /// location when the node's is not in the description) and returns
  /// false, so checks read `return error(...)`.
  bool error(yaml::Node *node, const Twine &msg) {
    if (message.empty()) {
      if (node && inBuffer(node->getSourceRange().Start))
        stream.printError(node, msg);
      else
        stream.printError(SMRange(), msg);
    }
    return false;
  }

  /// The first line that starts with '%' after the document's content has
  /// started, if any. LLVM's YAML scanner takes a '%' in column 0 for a
  /// directive and ends the document there, which shows up later as a
  /// missing value, a missing key or an unexpected token. (Inside a quoted
  /// scalar the '%' is text: only a description that fails is blamed on it.)
  std::optional<StringRef> directiveInDocument() const;

  std::optional<Entry> readEntry(yaml::KeyValueNode &kv);
  bool parseBlocks(yaml::Node *node, ModelDescription &model);
  bool parseBlock(yaml::MappingNode *node, unsigned index,
                  BlockDescription &block);

  bool getInt(const Entry &e, int64_t &out, int64_t min, int64_t max);
  bool getDouble(const Entry &e, double &out, double min);
  bool getBool(const Entry &e, bool &out);
  bool getString(const Entry &e, std::string &out);
  bool getChoice(const Entry &e, std::string &out,
                 ArrayRef<const char *> choices);
  bool scalarOrError(const Entry &e);

  Error makeError() {
    unsigned line = diagnostic.getLineNo() > 0 ? diagnostic.getLineNo() : 0;
    return make_error<ModelDescriptionError>(
        fileName, line,
        diagnostic.getColumnNo() + 1, diagnostic.getMessage().str(), message);
  }

  StringRef text; // the stream's buffer: SMLocs point into it
  SourceMgr sourceMgr;
  yaml::Stream stream;
  std::string message;
  SMDiagnostic diagnostic;
  std::string fileName;
};

std::optional<StringRef> Parser::directiveInDocument() const {
  bool inDocument = false;
  for (StringRef rest = text; !rest.empty();) {
    auto [line, next] = rest.split('\n');
    if (line.starts_with("..."))
      inDocument = false; // a document end: directives may follow
    else if (line.starts_with("%") && inDocument)
      return line;
    else if (!line.starts_with("%") && !line.ltrim().empty() &&
             !line.ltrim().starts_with("#"))
      inDocument = true;
    rest = next;
  }
  return std::nullopt;
}

std::optional<Entry> Parser::readEntry(yaml::KeyValueNode &kv) {
  Entry e;
  e.keyNode = kv.getKey();
  auto *key = dyn_cast_or_null<yaml::ScalarNode>(e.keyNode);
  if (!key) {
    error(e.keyNode, "expected a plain key");
    return std::nullopt;
  }
  SmallString<32> keyStorage;
  e.key = key->getValue(keyStorage).str();
  // The format is plain data. (An alias node has no location of its own, so
  // the error points at its key.)
  if (e.key == "<<") {
    error(e.keyNode, "YAML merge keys ('<<') are not supported: write the "
                     "keys out");
    return std::nullopt;
  }
  e.valueNode = kv.getValue();
  if (!e.valueNode) {
    // LLVM's YAML parser gives no value, and no error, when what follows
    // the key cannot start one (a '%' directive inside a document).
    error(e.keyNode, "cannot read a value for '" + e.key + "'");
    return std::nullopt;
  }
  if (auto *alias = dyn_cast<yaml::AliasNode>(e.valueNode)) {
    error(e.keyNode, "YAML aliases ('*" + alias->getName() +
                         "') are not supported: write the value of '" + e.key +
                         "' out");
    return std::nullopt;
  }
  if (isa<yaml::NullNode>(e.valueNode)) {
    e.isNull = true;
  } else if (auto *scalar = dyn_cast<yaml::ScalarNode>(e.valueNode)) {
    SmallString<32> storage;
    StringRef value = scalar->getValue(storage);
    bool quoted = scalar->getRawValue().starts_with("'") ||
                  scalar->getRawValue().starts_with("\"");
    e.isNull = !quoted && (value == "null" || value == "~" ||
                           value == "Null" || value == "NULL");
    e.scalar = value.str();
  }
  return e;
}

bool Parser::scalarOrError(const Entry &e) {
  if (e.isNull)
    return error(e.valueNode, "'" + e.key + "' needs a value, got null");
  if (!e.scalar) {
    // A syntax error inside the value is the better message.
    e.valueNode->skip();
    if (stream.failed())
      return false;
    return error(e.valueNode, "expected a scalar value for '" + e.key + "'");
  }
  return true;
}

bool Parser::getInt(const Entry &e, int64_t &out, int64_t min, int64_t max) {
  if (!scalarOrError(e))
    return false;
  int64_t value;
  if (StringRef(*e.scalar).getAsInteger(10, value))
    return error(e.valueNode, "expected an integer for '" + e.key +
                                  "', got '" + *e.scalar + "'");
  if (value < min || value > max)
    return error(e.valueNode, "'" + e.key + "' must be between " +
                                  Twine(min) + " and " + Twine(max) +
                                  ", got " + Twine(value));
  out = value;
  return true;
}

bool Parser::getDouble(const Entry &e, double &out, double min) {
  if (!scalarOrError(e))
    return false;
  double value;
  if (StringRef(*e.scalar).getAsDouble(value) || !std::isfinite(value))
    return error(e.valueNode, "expected a finite number for '" + e.key +
                                  "', got '" + *e.scalar + "'");
  if (value < min) // min is 0 or -inf
    return error(e.valueNode,
                 "'" + e.key + "' must not be negative, got " + *e.scalar);
  out = value;
  return true;
}

bool Parser::getBool(const Entry &e, bool &out) {
  if (!scalarOrError(e))
    return false;
  StringRef v = *e.scalar;
  if (v == "true" || v == "True" || v == "TRUE") {
    out = true;
    return true;
  }
  if (v == "false" || v == "False" || v == "FALSE") {
    out = false;
    return true;
  }
  return error(e.valueNode, "expected true or false for '" + e.key +
                                "', got '" + v + "'");
}

bool Parser::getString(const Entry &e, std::string &out) {
  if (!scalarOrError(e))
    return false;
  out = *e.scalar;
  return true;
}

bool Parser::getChoice(const Entry &e, std::string &out,
                       ArrayRef<const char *> choices) {
  if (!scalarOrError(e))
    return false;
  if (!contains(choices, *e.scalar)) {
    std::string msg = "unknown " + e.key + " '" + *e.scalar +
                      "'; expected " + joinQuoted(choices);
    if (auto guess = closest(*e.scalar, {choices}))
      msg += " (did you mean '" + guess->str() + "'?)";
    return error(e.valueNode, msg);
  }
  out = *e.scalar;
  return true;
}

Expected<ModelDescription> Parser::parse() {
  ModelDescription model;
  bool ok = [&]() -> bool {
    yaml::document_iterator doc = stream.begin();
    if (doc == stream.end())
      return error(nullptr, "the model description is empty");
    yaml::Node *root = doc->getRoot();
    if (!root || isa<yaml::NullNode>(root))
      return stream.failed() ? false
                             : error(root, "the model description is empty");
    auto *map = dyn_cast<yaml::MappingNode>(root);
    if (!map)
      return error(root, "expected a mapping of model keys (d_model, "
                         "seq_len, dtype, blocks)");
    StringMap<yaml::Node *> seen;
    for (yaml::KeyValueNode &kv : *map) {
      std::optional<Entry> e = readEntry(kv);
      if (!e)
        return false;
      if (!seen.try_emplace(e->key, e->keyNode).second)
        return error(e->keyNode, "duplicate key '" + e->key + "'");
      if (e->key == "name") {
        if (!getString(*e, model.name))
          return false;
      } else if (e->key == "d_model") {
        if (!getInt(*e, model.dModel, 1, kMaxDim))
          return false;
      } else if (e->key == "seq_len") {
        if (!getInt(*e, model.seqLen, 1, kMaxDim))
          return false;
      } else if (e->key == "dtype") {
        if (!getChoice(*e, model.dtype, kDTypes))
          return false;
      } else if (e->key == "blocks") {
        if (!parseBlocks(e->valueNode, model))
          return false;
      } else {
        std::string msg = "unknown key '" + e->key + "' in the model";
        if (auto guess = closest(e->key, {kModelKeys}))
          msg += "; did you mean '" + guess->str() + "'?";
        else
          msg += "; expected " + joinQuoted(kModelKeys);
        return error(e->keyNode, msg);
      }
    }
    if (stream.failed())
      return false;
    // A second document is reported before the required keys: a '---' in
    // the middle of the text ends the document there, and the keys after it
    // are in the second one. (Moving to it frees the first document's nodes:
    // only the mapping's place in the text is kept.)
    const char *missing = nullptr;
    for (const char *required : {"d_model", "seq_len", "blocks"})
      if (!missing && !seen.count(required))
        missing = required;
    SMRange mapRange = map->getSourceRange();
    if (++doc != stream.end() && !stream.failed())
      return error(doc->getRoot(),
                   "expected one YAML document, found a second");
    if (stream.failed())
      return false;
    if (missing) {
      stream.printError(inBuffer(mapRange.Start) ? mapRange : SMRange(),
                        Twine("the model is missing '") + missing + "'");
      return false;
    }
    return true;
  }();
  // Whatever the failure, a directive inside the document caused it.
  if (!ok)
    if (std::optional<StringRef> line = directiveInDocument()) {
      message.clear();
      stream.printError(
          SMRange(SMLoc::getFromPointer(line->data()),
                  SMLoc::getFromPointer(line->data() + 1)),
          "a '%' directive inside the document: directives go before its "
          "content (and before '---'), and a '%' cannot start a line of it");
    }
  // Every failure above reports itself, and LLVM's YAML scanner reports its
  // own errors; should one ever fail silently, the user still gets a
  // message rather than an empty one.
  if (!ok && message.empty())
    error(nullptr, "the model description is not valid YAML");
  if (!ok || !message.empty())
    return makeError();
  if (model.name.empty())
    model.name = "model";
  return model;
}

bool Parser::parseBlocks(yaml::Node *node, ModelDescription &model) {
  auto *seq = dyn_cast<yaml::SequenceNode>(node);
  if (!seq)
    return error(node, "'blocks' must be a list of blocks");
  unsigned index = 0;
  for (yaml::Node &item : *seq) {
    if (auto *alias = dyn_cast<yaml::AliasNode>(&item))
      return error(seq, "block " + Twine(index) + " is a YAML alias ('*" +
                            alias->getName() +
                            "'); aliases are not supported: write the "
                            "block out");
    auto *map = dyn_cast<yaml::MappingNode>(&item);
    // LLVM's YAML parser reads a '-' alone on its line, followed by
    // '- layer: ...' at the same indentation, as a list inside that item.
    if (isa<yaml::SequenceNode>(&item))
      return error(&item, "block " + Twine(index) +
                              " must be a mapping (layer: ..., d_ff: ...), "
                              "not a list (a '-' with nothing after it, "
                              "followed by '- ...', reads as a list inside "
                              "one block)");
    if (!map)
      return error(&item, "block " + Twine(index) +
                              " must be a mapping (layer: ..., d_ff: ...)");
    BlockDescription block;
    if (!parseBlock(map, index, block))
      return false;
    model.blocks.push_back(std::move(block));
    ++index;
  }
  if (stream.failed())
    return false;
  if (model.blocks.empty())
    return error(node, "'blocks' is empty; a model needs at least one block");
  // Checks that need d_model, which may come after the blocks.
  return true;
}

bool Parser::parseBlock(yaml::MappingNode *node, unsigned index,
                        BlockDescription &block) {
  SMLoc start = node->getSourceRange().Start;
  if (!inBuffer(start))
    return error(node, "block " + Twine(index) + " is not valid YAML");
  std::tie(block.line, block.column) = sourceMgr.getLineAndColumn(start);
  SmallVector<Entry> entries;
  StringMap<unsigned> seen;
  for (yaml::KeyValueNode &kv : *node) {
    std::optional<Entry> e = readEntry(kv);
    if (!e)
      return false;
    if (!seen.try_emplace(e->key, entries.size()).second)
      return error(e->keyNode, "duplicate key '" + e->key + "'");
    entries.push_back(std::move(*e));
  }
  if (stream.failed())
    return false;

  std::string where = "block " + std::to_string(index);
  auto find = [&](StringRef key) -> const Entry * {
    auto it = seen.find(key);
    return it == seen.end() ? nullptr : &entries[it->second];
  };
  const Entry *layer = find("layer");
  if (!layer)
    return error(node, where + " is missing 'layer' (" + joinQuoted(kLayers) +
                           ")");
  if (!getChoice(*layer, block.layer, kLayers))
    return false;
  where += " (" + block.layer + ")";

  ArrayRef<const char *> own;
  if (block.layer == "moe")
    own = kMoEKeys;
  else if (block.layer == "expert_choice")
    own = kExpertChoiceKeys;
  else if (block.layer == "soft_moe")
    own = kSoftMoEKeys;
  for (const Entry &e : entries) {
    if (contains(kCommonKeys, e.key) || contains(own, e.key))
      continue;
    if (contains(kMoEKeys, e.key) || contains(kSoftMoEKeys, e.key))
      return error(e.keyNode, "'" + e.key + "' does not apply to a '" +
                                  block.layer + "' layer");
    std::string msg = "unknown key '" + e.key + "' in " + where;
    if (auto guess =
            closest(e.key, {kCommonKeys, kMoEKeys, kSoftMoEKeys}))
      msg += "; did you mean '" + guess->str() + "'?";
    return error(e.keyNode, msg);
  }

  // Defaults that depend on the layer.
  if (block.layer == "moe")
    block.capacityFactor = 1.25;
  else if (block.layer == "expert_choice")
    block.capacityFactor = 2.0;

  for (const Entry &e : entries) {
    StringRef k = e.key;
    bool ok = true;
    if (k == "layer")
      continue;
    if (k == "norm")
      ok = getChoice(e, block.norm, kNorms);
    else if (k == "residual")
      ok = getBool(e, block.residual);
    else if (k == "experts")
      ok = getInt(e, block.experts, 1, kMaxDim);
    else if (k == "d_ff")
      ok = getInt(e, block.dFF, 1, kMaxDim);
    else if (k == "activation")
      ok = getChoice(e, block.activation, kActivations);
    else if (k == "bias")
      ok = getBool(e, block.bias);
    else if (k == "router_bias")
      ok = getBool(e, block.routerBias);
    else if (k == "top_k")
      ok = getInt(e, block.topK, 1, kMaxDim);
    else if (k == "capacity_factor") {
      if (e.isNull) {
        if (block.layer != "moe")
          return error(e.valueNode,
                       "an expert_choice layer needs a capacity: "
                       "'capacity_factor' cannot be null");
        block.capacityFactor.reset();
      } else {
        double cf;
        ok = getDouble(e, cf, -HUGE_VAL);
        if (ok && cf <= 0.0)
          return error(e.valueNode, "'capacity_factor' must be positive, got " +
                                        *e.scalar);
        block.capacityFactor = cf;
      }
    } else if (k == "expert_capacity") {
      int64_t c;
      ok = getInt(e, c, 1, kMaxDim);
      block.expertCapacity = c;
    } else if (k == "min_capacity")
      ok = getInt(e, block.minCapacity, 0, kMaxDim);
    else if (k == "normalize_gates")
      ok = getBool(e, block.normalizeGates);
    else if (k == "priority")
      ok = getChoice(e, block.priority, kOrders);
    else if (k == "reroute_dropped")
      ok = getBool(e, block.rerouteDropped);
    else if (k == "group")
      ok = getChoice(e, block.group, kOrders);
    else if (k == "aux_loss_weight")
      ok = getDouble(e, block.auxLossWeight, 0.0);
    else if (k == "z_loss_weight")
      ok = getDouble(e, block.zLossWeight, 0.0);
    else if (k == "slots_per_expert")
      ok = getInt(e, block.slotsPerExpert, 1, kMaxDim);
    else if (k == "normalize")
      ok = getBool(e, block.normalize);
    if (!ok)
      return false;
  }

  if (!find("d_ff"))
    return error(node, where + " is missing 'd_ff'");
  if (block.layer != "ffn" && !find("experts"))
    return error(node, where + " is missing 'experts'");
  if (block.topK > block.experts)
    return error(find("top_k")->valueNode,
                 "'top_k' (" + Twine(block.topK) +
                     ") cannot exceed the number of experts (" +
                     Twine(block.experts) + ")");
  if (block.rerouteDropped && block.topK != 1)
    return error(find("reroute_dropped")->valueNode,
                 "'reroute_dropped' needs top_k: 1 (got top_k: " +
                     Twine(block.topK) + ")");
  if (block.experts * block.slotsPerExpert > kMaxDim)
    return error(find("slots_per_expert")->valueNode,
                 "experts * slots_per_expert is too large");
  return true;
}

} // namespace

char ModelDescriptionError::ID = 0;

void ModelDescriptionError::log(raw_ostream &os) const { os << rendered; }

std::error_code ModelDescriptionError::convertToErrorCode() const {
  return inconvertibleErrorCode();
}

Expected<ModelDescription>
switchyard::parseModelDescription(StringRef text, StringRef bufferName) {
  Expected<ModelDescription> model = Parser(text, bufferName).parse();
  if (!model)
    return model.takeError();
  // Sizes that only the whole model determines.
  for (auto [i, block] : llvm::enumerate(model->blocks)) {
    int64_t lead = block.layer == "ffn" ? 1 : block.experts;
    if (lead * model->dModel > kMaxElements / block.dFF)
    {
      std::string msg = "block " + std::to_string(i) +
                        ": experts * d_model * d_ff is too large (at most "
                        "2^36 elements a weight)";
      return make_error<ModelDescriptionError>(
          bufferName.str(), block.line, block.column, msg,
          (bufferName + ":" + Twine(block.line) + ":" + Twine(block.column) +
           ": error: " + msg + "\n")
              .str());
    }
  }
  return model;
}

std::vector<WeightSpec>
switchyard::getWeightSpecs(const ModelDescription &model) {
  std::vector<WeightSpec> specs;
  const int64_t D = model.dModel;
  for (auto [i, block] : llvm::enumerate(model.blocks)) {
    std::string prefix = "blocks." + std::to_string(i) + ".";
    auto add = [&](StringRef name, std::vector<int64_t> shape, bool f32) {
      specs.push_back({prefix + name.str(), std::move(shape),
                       f32 ? "f32" : model.dtype});
    };
    if (block.norm != "none") {
      add("norm.weight", {D}, false);
      if (block.norm == "layer")
        add("norm.bias", {D}, false);
    }
    const int64_t E = block.experts, F = block.dFF;
    if (block.isRouted()) {
      add("router.weight", {D, E}, true);
      if (block.routerBias)
        add("router.bias", {E}, true);
    }
    if (block.layer == "soft_moe") {
      add("soft.phi", {D, E * block.slotsPerExpert}, false);
      add("soft.scale", {}, true);
    }
    bool dense = block.layer == "ffn";
    std::string mlp = dense ? "ffn." : "experts.";
    auto lead = [&](std::vector<int64_t> shape) {
      if (!dense)
        shape.insert(shape.begin(), E);
      return shape;
    };
    add(mlp + "w1", lead({D, F}), false);
    if (block.isGated())
      add(mlp + "wg", lead({D, F}), false);
    add(mlp + "w2", lead({F, D}), false);
    if (block.bias) {
      add(mlp + "b1", lead({F}), false);
      add(mlp + "b2", lead({D}), false);
    }
  }
  return specs;
}
