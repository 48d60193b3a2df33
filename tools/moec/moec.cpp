//===- moec.cpp - The Switchyard compiler driver --------------------------===//
//
// Part of Switchyard. `moec MODEL -o OUT` compiles a model description
// (YAML) or a layer-level moe-dialect module (.mlir) into an executable, a
// shared library with a C header, an object file, LLVM IR, or MLIR at any
// stage of the pipeline (docs/Artifacts.md). It runs the same named pipeline as
// `moe-opt --switchyard-cpu-pipeline`, and takes MLIR's instrumentation
// flags (--mlir-print-ir-after-all, --mlir-timing, ...).
//
//===----------------------------------------------------------------------===//

#include "switchyard/Driver/Compiler.h"
#include "switchyard/Frontend/Importer.h"
#include "switchyard/InitAll.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/Timing.h"
#include "mlir/Support/ToolUtilities.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Target/TargetMachine.h"

using namespace mlir;
using namespace switchyard;
namespace cl = llvm::cl;

namespace {
enum class Emit { Exe, Lib, Obj, LLVMIR, MLIR };
enum class Target { CPU };

cl::OptionCategory moecCategory("moec options");
cl::OptionCategory mlirCategory("MLIR options (timing and IR printing)");

cl::opt<std::string> inputFile(cl::Positional, cl::desc("<model.yaml|model.mlir>"),
                               cl::Required, cl::cat(moecCategory));
cl::opt<std::string> outputFile("o", cl::desc("Output file ('-' for stdout; "
                                              "required for exe, lib and obj)"),
                                cl::value_desc("path"), cl::init("-"),
                                cl::cat(moecCategory));
cl::opt<Emit> emit(
    "emit", cl::desc("What to produce"), cl::init(Emit::Exe),
    cl::values(clEnumValN(Emit::Exe, "exe", "an executable (default)"),
               clEnumValN(Emit::Lib, "lib",
                          "a shared library with a C ABI, and its header"),
               clEnumValN(Emit::Obj, "obj", "an object file"),
               clEnumValN(Emit::LLVMIR, "llvmir", "LLVM IR, optimized"),
               clEnumValN(Emit::MLIR, "mlir", "MLIR at --stage")),
    cl::cat(moecCategory));
cl::opt<Stage> stage(
    "stage", cl::desc("With --emit=mlir, where to stop the IR"),
    cl::init(Stage::LLVM),
    cl::values(clEnumValN(Stage::Layer, "layer", "the moe dialect, one op a block"),
               clEnumValN(Stage::Routing, "routing",
                          "the moe dialect, routing level"),
               clEnumValN(Stage::Fused, "fused",
                          "the routing level after the fusion passes"),
               clEnumValN(Stage::Linalg, "linalg", "linalg on tensors"),
               clEnumValN(Stage::Loops, "loops", "bufferized loops"),
               clEnumValN(Stage::LLVM, "llvm", "the LLVM dialect (default)")),
    cl::cat(moecCategory));
cl::opt<Target> target("target", cl::desc("The code generation target"),
                       cl::init(Target::CPU),
                       cl::values(clEnumValN(Target::CPU, "cpu",
                                             "the host CPU (default)")),
                       cl::cat(moecCategory));
cl::opt<unsigned> optLevel("O", cl::desc("LLVM optimization level (0-3, default 3)"),
                           cl::Prefix, cl::init(3), cl::cat(moecCategory));
cl::opt<bool> noParallel("no-parallel",
                         cl::desc("Do not run loops on OpenMP threads"),
                         cl::init(false), cl::cat(moecCategory));
cl::opt<bool> noFusion("no-fusion",
                       cl::desc("Do not run the moe fusion passes "
                                "(moe-fuse-router, moe-fuse-experts, "
                                "moe-fuse-soft)"),
                       cl::init(false), cl::cat(moecCategory));
cl::opt<bool> bf16Dot(
    "bf16-dot-products",
    cl::desc("Multiply bf16 expert weights with the AVX-512 BF16 dot-product "
             "instruction (vdpbf16ps); the host must have avx512bf16"),
    cl::init(false), cl::cat(moecCategory));
cl::opt<cl::boolOrDefault> bf16Amx(
    "bf16-amx",
    cl::desc("Multiply bf16 expert weights on AMX tiles (tdpbf16ps); the "
             "host must have amx-tile and amx-bf16 (default: when it has)"),
    cl::cat(moecCategory));
cl::opt<bool> sanitize("sanitize",
                       cl::desc("Link the runtime built with AddressSanitizer "
                                "and UndefinedBehaviorSanitizer"),
                       cl::init(false), cl::cat(moecCategory));
cl::opt<bool> listWeights("list-weights",
                          cl::desc("Print the weights the model takes "
                                   "(name, shape, dtype) and exit"),
                          cl::init(false), cl::cat(moecCategory));

/// The compile options the command line asks for.
CompileOptions compileOptions() {
  CompileOptions options;
  options.stage = emit == Emit::MLIR ? stage.getValue() : Stage::LLVM;
  options.parallel = !noParallel;
  options.fusion = !noFusion;
  options.bf16DotProducts = bf16Dot;
  if (bf16Amx != cl::BOU_UNSET)
    options.bf16Amx = bf16Amx == cl::BOU_TRUE;
  options.optLevel = optLevel;
  return options;
}

bool explicitOption(const cl::Option &option) {
  return option.getNumOccurrences() > 0;
}

LogicalResult compile(MLIRContext &context, llvm::SourceMgr &sourceMgr,
                      DefaultTimingManager &timing) {
  TimingScope root = timing.getRootScope();
  // Problems with no place in the input (linking, writing) are located
  // nowhere and printed as "moec: error: ...".
  Location fileLoc = UnknownLoc::get(&context);

  OwningOpRef<ModuleOp> module;
  {
    TimingScope t = root.nest("Import");
    module = loadModel(sourceMgr, &context);
  }
  if (!module)
    return failure();
  func::FuncOp entry = getEntryFunction(*module);
  if (!entry)
    return failure();
  entry->setAttr("llvm.emit_c_interface", UnitAttr::get(&context));

  std::string manifest;
  if (emit != Emit::MLIR || listWeights) {
    FailureOr<std::string> built = buildManifest(entry);
    if (failed(built))
      return failure();
    manifest = std::move(*built);
  }
  if (listWeights) {
    auto parsed = llvm::json::parse(manifest);
    for (const llvm::json::Value &w : *parsed->getAsObject()->getArray("weights")) {
      const llvm::json::Object *o = w.getAsObject();
      llvm::outs() << *o->getString("name") << " [";
      llvm::interleaveComma(*o->getArray("shape"), llvm::outs(),
                            [](const llvm::json::Value &d) {
                              llvm::outs() << *d.getAsInteger();
                            });
      llvm::outs() << "] " << *o->getString("dtype") << "\n";
    }
    return success();
  }

  CompileOptions options = compileOptions();
  std::string entryName = entry.getName().str();
  {
    TimingScope t = root.nest("Pipeline");
    auto configure = [&](PassManager &pm) -> LogicalResult {
      if (failed(applyPassManagerCLOptions(pm)))
        return failure();
      pm.enableTiming(t);
      return success();
    };
    if (failed(lowerToStage(*module, options, configure)))
      return failure();
  }

  std::string error;
  if (emit == Emit::MLIR) {
    auto out = openOutputFile(outputFile, &error);
    if (!out)
      return emitError(fileLoc) << error;
    module->print(out->os(), OpPrintingFlags());
    out->os() << "\n";
    out->keep();
    return success();
  }

  std::unique_ptr<llvm::TargetMachine> machine =
      createHostTargetMachine(optLevel, error);
  if (!machine)
    return emitError(fileLoc) << error;
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule;
  {
    TimingScope t = root.nest("Translate to LLVM IR and optimize");
    llvmModule = translateToLLVMIR(*module, llvmContext, entryName, manifest,
                                   *machine, optLevel);
  }
  if (!llvmModule)
    return failure();
  if (emit == Emit::LLVMIR) {
    auto out = openOutputFile(outputFile, &error);
    if (!out)
      return emitError(fileLoc) << error;
    llvmModule->print(out->os(), nullptr);
    out->keep();
    return success();
  }
  if (emit == Emit::Obj) {
    TimingScope t = root.nest("Code generation");
    return emitObjectFile(*llvmModule, *machine, outputFile, fileLoc);
  }

  return buildArtifact(*llvmModule, *machine, outputFile,
                       emit == Emit::Exe ? ArtifactKind::Executable
                                         : ArtifactKind::SharedLibrary,
                       sanitize, manifest, fileLoc, root);
}

/// Checks of the command line alone; prints and returns false on a problem.
bool checkOptions() {
  auto fail = [](const llvm::Twine &msg) {
    llvm::errs() << "moec: error: " << msg << "\n";
    return false;
  };
  if (optLevel > 3)
    return fail("-O" + llvm::Twine(optLevel) + " is not a level (0-3)");
  if (explicitOption(stage) && emit != Emit::MLIR)
    return fail("--stage applies to --emit=mlir (the other outputs are built "
                "from the LLVM dialect)");
  if (outputFile.empty())
    return fail("-o needs a path");
  if (std::optional<std::string> problem =
          compileOptionsProblem(compileOptions()))
    return fail(*problem);
  bool toFile = emit == Emit::Exe || emit == Emit::Lib || emit == Emit::Obj;
  if (toFile && outputFile == "-" && !listWeights)
    return fail("--emit=exe, lib and obj write a file: -o needs a path (not "
                "'-', standard output)");
  if (outputFile != "-" && !listWeights && llvm::sys::fs::exists(outputFile) &&
      llvm::sys::fs::equivalent(inputFile, outputFile))
    return fail("the output '" + outputFile + "' is the input");
  if (emit == Emit::Lib && !listWeights) {
    llvm::SmallString<128> header(outputFile);
    llvm::sys::path::replace_extension(header, ".h");
    if (header == outputFile)
      return fail("the library '" + outputFile +
                  "' would be overwritten by its header (the same name with "
                  ".h): name it libNAME.so");
  }
  // Refuse an unwritable output before compiling anything.
  if (outputFile != "-" && !listWeights) {
    if (llvm::sys::fs::is_directory(outputFile))
      return fail("cannot write '" + outputFile + "': it is a directory");
    llvm::SmallString<128> probe;
    int fd;
    if (std::error_code ec = llvm::sys::fs::createUniqueFile(
            outputFile + ".tmp-%%%%%%", fd, probe))
      return fail("cannot write '" + outputFile + "': " + ec.message());
    llvm::sys::fs::closeFile(fd);
    llvm::sys::fs::remove(probe);
  }
  return true;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM initLLVM(argc, argv);
  registerMLIRContextCLOptions();
  registerPassManagerCLOptions();
  registerDefaultTimingManagerCLOptions();
  registerAsmPrinterCLOptions();
  // MLIR's options (--mlir-timing, --mlir-print-ir-after-all, ...) are listed;
  // LLVM's hundreds of code generation options, for every backend linked in,
  // still parse but stay out of --help (--help-hidden lists them).
  for (auto &entry : cl::getRegisteredOptions())
    if (entry.first.starts_with("mlir-"))
      entry.second->addCategory(mlirCategory);
  cl::HideUnrelatedOptions({&moecCategory, &mlirCategory});
  // A command line LLVM's parser refuses is an unusable command line like
  // any other (status 2), reported in the same form where the parser lets us
  // (a bad option value it prints itself, as `moec: for the --X option: `).
  std::string parseErrors;
  llvm::raw_string_ostream parseErrorStream(parseErrors);
  if (!cl::ParseCommandLineOptions(
          argc, argv,
          "moec: the Switchyard compiler\n\n"
          "  moec model.yaml -o model           an executable (see model "
          "--help)\n"
          "  moec model.yaml --emit=lib -o libmodel.so   and libmodel.h\n"
          "  moec model.yaml --emit=mlir --stage=routing  the IR at a stage\n",
          &parseErrorStream)) {
    llvm::SmallVector<llvm::StringRef> lines;
    llvm::StringRef(parseErrors).rtrim().split(lines, '\n', -1, false);
    for (auto [i, line] : llvm::enumerate(lines)) {
      line.consume_front("moec: ");
      llvm::errs() << (i == 0 ? "moec: error: " : "moec: note: ") << line.trim()
                   << "\n";
    }
    return 2;
  }

  if (!checkOptions())
    return 2;

  DialectRegistry registry;
  mlir::registerAllDialects(registry);
  registerAllExtensions(registry);
  registerAllToLLVMIRTranslations(registry);
  switchyard::registerAllDialects(registry);
  MLIRContext context(registry);
  // Diagnostics point at the source; the op dump is noise for users.
  context.printOpOnDiagnostic(false);

  std::string error;
  std::unique_ptr<llvm::MemoryBuffer> input = openInputFile(inputFile, &error);
  if (!input) {
    llvm::errs() << "moec: error: " << error << "\n";
    return 1;
  }
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(std::move(input), llvm::SMLoc());
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);
  ScopedDiagnosticHandler unlocated(&context, [](Diagnostic &diag) {
    if (!isa<UnknownLoc>(diag.getLocation()))
      return failure(); // to the SourceMgr handler
    llvm::errs() << "moec: " << (diag.getSeverity() == DiagnosticSeverity::Error
                                     ? "error: "
                                     : "note: ")
                 << diag << "\n";
    return success();
  });

  DefaultTimingManager timing;
  applyDefaultTimingManagerCLOptions(timing);
  return failed(compile(context, sourceMgr, timing)) ? 1 : 0;
}
