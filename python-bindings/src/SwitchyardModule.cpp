//===- SwitchyardModule.cpp - The switchyard._switchyard extension ---------===//
//
// Part of Switchyard. The compiler half of the Python package: parsing model
// descriptions and compiling them, through the same C++ functions as moec
// (lib/Frontend, lib/Driver, the named CPU pipeline). Running compiled models
// goes through the artifacts' C API (switchyard/_runtime.py).
//
//===----------------------------------------------------------------------===//

#include "switchyard/Driver/Compiler.h"
#include "switchyard/Frontend/Importer.h"
#include "switchyard/Frontend/ModelDescription.h"
#include "switchyard/InitAll.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassInstrumentation.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Target/TargetMachine.h"

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <mutex>
#include <stdexcept>

namespace nb = nanobind;
using namespace mlir;
using namespace switchyard;

namespace {

/// A problem in a model description (raised as switchyard.ModelError).
struct ModelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// A failure to compile (raised as switchyard.CompileError).
struct CompileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

nb::dict describe(const ModelDescription &model) {
  nb::dict out;
  out["name"] = model.name;
  out["d_model"] = model.dModel;
  out["seq_len"] = model.seqLen;
  out["dtype"] = model.dtype;
  nb::list blocks;
  for (const BlockDescription &b : model.blocks) {
    nb::dict d;
    d["layer"] = b.layer;
    d["norm"] = b.norm;
    d["residual"] = b.residual;
    d["d_ff"] = b.dFF;
    d["activation"] = b.activation;
    d["bias"] = b.bias;
    if (b.layer != "ffn")
      d["experts"] = b.experts;
    if (b.isRouted()) {
      d["router_bias"] = b.routerBias;
      d["min_capacity"] = b.minCapacity;
      d["group"] = b.group;
      d["z_loss_weight"] = b.zLossWeight;
      if (b.expertCapacity)
        d["expert_capacity"] = *b.expertCapacity;
      if (b.capacityFactor)
        d["capacity_factor"] = *b.capacityFactor;
      else
        d["capacity_factor"] = nb::none();
    }
    if (b.layer == "moe") {
      d["top_k"] = b.topK;
      d["normalize_gates"] = b.normalizeGates;
      d["priority"] = b.priority;
      d["reroute_dropped"] = b.rerouteDropped;
      d["aux_loss_weight"] = b.auxLossWeight;
    }
    if (b.layer == "soft_moe") {
      d["slots_per_expert"] = b.slotsPerExpert;
      d["normalize"] = b.normalize;
      d["group"] = b.group;
    }
    blocks.append(d);
  }
  out["blocks"] = blocks;
  return out;
}

nb::dict parseModel(const std::string &text, const std::string &fileName) {
  llvm::Expected<ModelDescription> model = parseModelDescription(text, fileName);
  if (!model) {
    // Rendered as moec's diagnostic handler renders it, so that both say
    // exactly the same.
    std::string message;
    llvm::handleAllErrors(model.takeError(), [&](ModelDescriptionError &e) {
      llvm::SourceMgr sourceMgr;
      unsigned id = sourceMgr.AddNewSourceBuffer(
          llvm::MemoryBuffer::getMemBufferCopy(text, fileName), llvm::SMLoc());
      llvm::raw_string_ostream os(message);
      sourceMgr.PrintMessage(
          os, sourceMgr.FindLocForLineAndColumn(id, std::max(1u, e.line), e.column),
          llvm::SourceMgr::DK_Error, e.message);
    });
    throw ModelError(message);
  }
  return describe(*model);
}

MLIRContext &context() {
  // One context for the process: creating one loads every dialect.
  static MLIRContext *ctx = [] {
    DialectRegistry registry;
    mlir::registerAllDialects(registry);
    registerAllExtensions(registry);
    registerAllToLLVMIRTranslations(registry);
    switchyard::registerAllDialects(registry);
    auto *c = new MLIRContext(registry);
    c->printOpOnDiagnostic(false);
    return c;
  }();
  return *ctx;
}
std::mutex contextMutex;

/// Records the passes that ran, in order.
struct PassRecorder : PassInstrumentation {
  explicit PassRecorder(std::vector<std::string> &names) : names(names) {}
  void runAfterPass(Pass *pass, Operation *) override {
    // Pass managers that only run nested pipelines are not passes to users.
    if (pass->getArgument().empty())
      return;
    std::lock_guard<std::mutex> lock(mutex);
    names.push_back(pass->getArgument().str());
  }
  std::vector<std::string> &names;
  std::mutex mutex;
};

struct CompileResult {
  std::optional<std::string> ir;
  std::vector<std::string> passes;
  std::string irAfterAll;
  std::optional<std::string> manifest;
};

/// Compiles `text` (YAML when `fileName` ends in .yaml/.yml, else MLIR).
/// With `output`, links a shared library there (and its header beside it);
/// otherwise returns the IR at `stage`.
CompileResult compileModel(const std::string &text, const std::string &fileName,
                           const std::string &stageText, unsigned optLevel,
                           bool parallel, bool fusion, bool bf16DotProducts,
                           std::optional<bool> bf16Amx, bool captureIR,
                           std::optional<std::string> output,
                           const std::string &runtimeDir) {
  std::optional<Stage> stage = parseStage(stageText);
  if (!stage)
    throw std::invalid_argument("unknown stage '" + stageText +
                                "'; expected layer, routing, fused, linalg, "
                                "loops or llvm");
  if (optLevel > 3)
    throw std::invalid_argument("opt_level must be 0 to 3");
  std::lock_guard<std::mutex> lock(contextMutex);
  MLIRContext &ctx = context();

  std::string diagnostics;
  llvm::raw_string_ostream diagStream(diagnostics);
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(text, fileName),
                               llvm::SMLoc());
  SourceMgrDiagnosticHandler sourceHandler(sourceMgr, &ctx, diagStream);
  ScopedDiagnosticHandler unlocated(&ctx, [&](Diagnostic &diag) {
    if (!isa<UnknownLoc>(diag.getLocation()))
      return failure();
    diagStream << "error: " << diag << "\n";
    return success();
  });
  auto fail = [&](const std::string &context) -> CompileError {
    return CompileError(diagnostics + context);
  };

  OwningOpRef<ModuleOp> module = loadModel(sourceMgr, &ctx);
  if (!module)
    throw ModelError(diagnostics);
  // No entry, or one the manifest cannot describe: a bad model, as moec's
  // exit status 1 says.
  func::FuncOp entry = getEntryFunction(*module);
  if (!entry)
    throw ModelError(diagnostics);
  entry->setAttr("llvm.emit_c_interface", UnitAttr::get(&ctx));
  // The pipeline replaces the func.func; keep its name.
  std::string entryName = entry.getName().str();
  CompileResult result;
  if (output) {
    FailureOr<std::string> manifest = buildManifest(entry);
    if (failed(manifest))
      throw ModelError(diagnostics);
    result.manifest = *manifest;
  }
  std::string layerIR;
  {
    llvm::raw_string_ostream os(layerIR);
    module->print(os);
  }

  CompileOptions options;
  options.stage = *stage;
  options.parallel = parallel;
  options.fusion = fusion;
  options.bf16DotProducts = bf16DotProducts;
  options.bf16Amx = bf16Amx;
  options.optLevel = optLevel;
  // Options the host cannot compile fail here, at every stage (as moec's
  // command line does), before the pipeline: no moe-opt command would
  // reproduce them.
  if (failed(checkCompileOptions(options, entry.getLoc())))
    throw fail("");
  llvm::raw_string_ostream irStream(result.irAfterAll);
  auto configure = [&](PassManager &pm) -> LogicalResult {
    pm.addInstrumentation(std::make_unique<PassRecorder>(result.passes));
    if (captureIR) {
      // The same text as --mlir-print-ir-after-all.
      pm.enableIRPrinting([](Pass *, Operation *) { return false; },
                          [](Pass *, Operation *) { return true; },
                          /*printModuleScope=*/false,
                          /*printAfterOnlyOnChange=*/false,
                          /*printAfterOnlyOnFailure=*/false, irStream);
    }
    return success();
  };
  if (failed(lowerToStage(*module, options, configure))) {
    // Leave the input behind so the failure can be reproduced with moe-opt.
    llvm::SmallString<128> dir;
    std::string repro = "\n(could not write the input for moe-opt)";
    if (!llvm::sys::fs::createUniqueDirectory("switchyard-failure", dir)) {
      llvm::SmallString<128> path(dir);
      llvm::sys::path::append(path, "model.mlir");
      std::error_code ec;
      llvm::raw_fd_ostream os(path, ec);
      if (!ec) {
        os << layerIR;
        repro = "\nreproduce with: moe-opt " + std::string(path) +
                " '--switchyard-cpu-pipeline=stop-after=" +
                (*stage == Stage::Layer ? "routing" : stringifyStage(*stage))
                    .str() +
                " parallel=" + (parallel ? "true" : "false") +
                " fusion=" + (fusion ? "true" : "false") +
                " bf16-dot-products=" + (bf16DotProducts ? "true" : "false") +
                " bf16-amx=" + (usesBF16Amx(options) ? "true" : "false") + "'";
      }
    }
    throw fail(repro);
  }

  if (!output) {
    std::string ir;
    llvm::raw_string_ostream os(ir);
    module->print(os);
    result.ir = std::move(ir);
    return result;
  }

  std::string error;
  std::unique_ptr<llvm::TargetMachine> machine =
      createHostTargetMachine(optLevel, error);
  if (!machine)
    throw CompileError(error);
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule =
      translateToLLVMIR(*module, llvmContext, entryName, *result.manifest,
                        *machine, optLevel);
  if (!llvmModule)
    throw fail("");
  TimingScope noTiming;
  if (failed(buildArtifact(*llvmModule, *machine, *output,
                           ArtifactKind::SharedLibrary, /*sanitize=*/false,
                           *result.manifest, UnknownLoc::get(&ctx), noTiming,
                           runtimeDir)))
    throw fail("");
  return result;
}

} // namespace

NB_MODULE(_switchyard, m) {
  m.doc() = "Switchyard's compiler, for the switchyard package";
  nb::exception<ModelError>(m, "ModelError", PyExc_ValueError);
  nb::exception<CompileError>(m, "CompileError", PyExc_RuntimeError);

  m.def("parse_model", &parseModel, nb::arg("text"), nb::arg("file_name"),
        "Parses and validates a YAML model description; returns it as a dict "
        "with every default filled in.");

  nb::class_<CompileResult>(m, "CompileResult")
      .def_ro("ir", &CompileResult::ir)
      .def_ro("passes", &CompileResult::passes)
      .def_ro("ir_after_all", &CompileResult::irAfterAll)
      .def_ro("manifest", &CompileResult::manifest);

  m.def("compile", &compileModel, nb::arg("text"), nb::arg("file_name"),
        nb::arg("stage"), nb::arg("opt_level"), nb::arg("parallel"),
        nb::arg("fusion"), nb::arg("bf16_dot_products"),
        nb::arg("bf16_amx").none(), nb::arg("capture_ir"),
        nb::arg("output").none(), nb::arg("runtime_dir"),
        nb::call_guard<nb::gil_scoped_release>(),
        "Compiles a model; links a shared library at `output` when given, "
        "else returns the IR at `stage`.");
}
