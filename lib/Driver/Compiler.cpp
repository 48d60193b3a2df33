//===- Compiler.cpp - From a model file to artifacts ----------------------===//
//
// Part of Switchyard.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Driver/Compiler.h"

#include "switchyard/Config.h"
#include "switchyard/Frontend/Importer.h"
#include "switchyard/Pipelines/Pipelines.h"

#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"

#include <cstdlib>

using namespace mlir;
using namespace switchyard;

static constexpr std::pair<Stage, llvm::StringLiteral> kStageNames[] = {
    {Stage::Layer, "layer"},   {Stage::Routing, "routing"},
    {Stage::Fused, "fused"},   {Stage::Linalg, "linalg"},
    {Stage::Loops, "loops"},   {Stage::LLVM, "llvm"}};

std::optional<Stage> switchyard::parseStage(llvm::StringRef name) {
  for (auto [stage, spelling] : kStageNames)
    if (name == spelling)
      return stage;
  return std::nullopt;
}

llvm::StringRef switchyard::stringifyStage(Stage stage) {
  for (auto [s, spelling] : kStageNames)
    if (s == stage)
      return spelling;
  llvm_unreachable("unknown stage");
}

OwningOpRef<ModuleOp> switchyard::loadModel(llvm::SourceMgr &sourceMgr,
                                            MLIRContext *context) {
  const llvm::MemoryBuffer *buffer =
      sourceMgr.getMemoryBuffer(sourceMgr.getMainFileID());
  llvm::StringRef name = buffer->getBufferIdentifier();
  if (!name.ends_with(".yaml") && !name.ends_with(".yml"))
    return parseSourceFile<ModuleOp>(sourceMgr, ParserConfig(context));

  llvm::Expected<ModelDescription> model =
      parseModelDescription(buffer->getBuffer(), name);
  if (!model) {
    llvm::handleAllErrors(model.takeError(), [&](ModelDescriptionError &e) {
      Location loc = e.line ? Location(FileLineColLoc::get(
                                  context, name, e.line, e.column))
                            : Location(FileLineColLoc::get(context, name, 1, 1));
      emitError(loc) << e.message;
    });
    return nullptr;
  }
  OwningOpRef<ModuleOp> module = importModel(*model, context, name);
  if (failed(module->verify()))
    return nullptr;
  return module;
}

std::optional<std::string>
switchyard::compileOptionsProblem(const CompileOptions &options) {
  // The code runs on the host (createHostTargetMachine).
  if (options.bf16DotProducts && !hostHasBF16DotProducts())
    return "bf16 dot products need a host with avx512bf16";
  bool amx = usesBF16Amx(options);
  if (options.bf16DotProducts && amx)
    return "bf16 products take one path: dot products or AMX tiles, not both";
  if (amx && !hostHasBF16Amx())
    return "bf16 AMX products need a host with amx-tile and amx-bf16";
  return std::nullopt;
}

LogicalResult switchyard::checkCompileOptions(const CompileOptions &options,
                                              Location loc) {
  if (std::optional<std::string> problem = compileOptionsProblem(options))
    return emitError(loc, *problem);
  return success();
}

LogicalResult switchyard::lowerToStage(
    ModuleOp module, const CompileOptions &options,
    llvm::function_ref<LogicalResult(PassManager &)> configure) {
  if (options.stage == Stage::Layer)
    return success();
  if (failed(checkCompileOptions(options, module.getLoc())))
    return failure();
  bool amx = usesBF16Amx(options);
  PassManager pm(module->getContext());
  if (configure && failed(configure(pm)))
    return failure();
  CPUPipelineOptions pipeline;
  pipeline.parallel = options.parallel;
  pipeline.fusion = options.fusion;
  pipeline.bf16DotProducts = options.bf16DotProducts;
  pipeline.bf16Amx = amx;
  switch (options.stage) {
  case Stage::Layer:
  case Stage::Routing:
    pipeline.stopAfter = CPUStage::Routing;
    break;
  case Stage::Fused:
    pipeline.stopAfter = CPUStage::Fused;
    break;
  case Stage::Linalg:
    pipeline.stopAfter = CPUStage::Linalg;
    break;
  case Stage::Loops:
    pipeline.stopAfter = CPUStage::Loops;
    break;
  case Stage::LLVM:
    pipeline.stopAfter = CPUStage::LLVM;
    break;
  }
  buildCPUPipeline(pm, pipeline);
  return pm.run(module);
}

static bool hostHasFeature(llvm::StringRef name) {
  llvm::StringMap<bool> features = llvm::sys::getHostCPUFeatures();
  auto it = features.find(name);
  return it != features.end() && it->second;
}

bool switchyard::hostHasBF16DotProducts() {
  return hostHasFeature("avx512bf16");
}

bool switchyard::hostHasBF16Amx() {
  return hostHasFeature("amx-tile") && hostHasFeature("amx-bf16");
}

bool switchyard::usesBF16Amx(const CompileOptions &options) {
  return options.bf16Amx.value_or(!options.bf16DotProducts && hostHasBF16Amx());
}

std::unique_ptr<llvm::TargetMachine>
switchyard::createHostTargetMachine(unsigned optLevel, std::string &error) {
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  llvm::Triple triple(llvm::sys::getProcessTriple());
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return nullptr;
  llvm::SubtargetFeatures features;
  for (const auto &feature : llvm::sys::getHostCPUFeatures())
    features.AddFeature(feature.first(), feature.second);
  llvm::CodeGenOptLevel level = optLevel == 0   ? llvm::CodeGenOptLevel::None
                                : optLevel == 1 ? llvm::CodeGenOptLevel::Less
                                : optLevel == 2
                                    ? llvm::CodeGenOptLevel::Default
                                    : llvm::CodeGenOptLevel::Aggressive;
  std::unique_ptr<llvm::TargetMachine> machine(target->createTargetMachine(
      triple, llvm::sys::getHostCPUName(), features.getString(),
      llvm::TargetOptions(), llvm::Reloc::PIC_, std::nullopt, level));
  if (!machine)
    error = "cannot create a target machine for " + triple.str();
  return machine;
}

/// Adds `"prepack": [{"weight": i, "shape": [...]}, ...]` from the module's
/// `switchyard.prepack` (switchyard-hoist-weight-packing) to `manifest`.
static LogicalResult addPrepackToManifest(ModuleOp module,
                                          std::string &manifest) {
  auto records = module->getAttrOfType<ArrayAttr>("switchyard.prepack");
  llvm::Expected<llvm::json::Value> parsed = llvm::json::parse(manifest);
  if (!parsed) {
    llvm::consumeError(parsed.takeError());
    return emitError(module.getLoc(), "the manifest is not valid JSON");
  }
  llvm::json::Array prepack;
  for (Attribute record : records ? records.getValue() : ArrayRef<Attribute>{}) {
    auto dict = cast<DictionaryAttr>(record);
    llvm::json::Array shape;
    for (int64_t d : cast<DenseI64ArrayAttr>(dict.get("shape")).asArrayRef())
      shape.push_back(d);
    prepack.push_back(llvm::json::Object{
        {"weight", cast<IntegerAttr>(dict.get("weight")).getInt()},
        {"shape", std::move(shape)}});
  }
  parsed->getAsObject()->insert({"prepack", std::move(prepack)});
  manifest = llvm::formatv("{0}", *parsed).str();
  return success();
}

/// `void name(void **args)`: args[i] is the i-th parameter of `ciface` (the
/// result struct first, then the descriptors); without `ciface`, does
/// nothing.
static void addVoidStarStarWrapper(llvm::Module &module, llvm::StringRef name,
                                   llvm::Function *ciface) {
  llvm::LLVMContext &ctx = module.getContext();
  auto *ptrType = llvm::PointerType::getUnqual(ctx);
  auto *wrapper = llvm::Function::Create(
      llvm::FunctionType::get(llvm::Type::getVoidTy(ctx), {ptrType},
                              /*isVarArg=*/false),
      llvm::GlobalValue::ExternalLinkage, name, module);
  llvm::IRBuilder<> b(llvm::BasicBlock::Create(ctx, "entry", wrapper));
  if (ciface) {
    llvm::SmallVector<llvm::Value *> args;
    for (unsigned i = 0; i < ciface->arg_size(); ++i)
      args.push_back(b.CreateLoad(
          ptrType, b.CreateConstGEP1_64(ptrType, wrapper->getArg(0), i)));
    b.CreateCall(ciface, args);
  }
  b.CreateRetVoid();
}

std::unique_ptr<llvm::Module> switchyard::translateToLLVMIR(
    ModuleOp module, llvm::LLVMContext &llvmContext, llvm::StringRef entry,
    std::string &manifest, llvm::TargetMachine &machine, unsigned optLevel) {
  if (failed(addPrepackToManifest(module, manifest)))
    return nullptr;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(module, llvmContext, "switchyard");
  if (!llvmModule) {
    emitError(module.getLoc(), "cannot translate the module to LLVM IR");
    return nullptr;
  }
  llvmModule->setDataLayout(machine.createDataLayout());
  llvmModule->setTargetTriple(machine.getTargetTriple());

  std::string cifaceName = ("_mlir_ciface_" + entry).str();
  llvm::Function *ciface = llvmModule->getFunction(cifaceName);
  if (!ciface || ciface->isDeclaration()) {
    emitError(module.getLoc())
        << "'" << entry << "' has no C interface ('" << cifaceName
        << "'): the entry function needs the llvm.emit_c_interface attribute";
    return nullptr;
  }
  addVoidStarStarWrapper(*llvmModule, "switchyard_entry", ciface);
  llvm::Function *prepack =
      llvmModule->getFunction(("_mlir_ciface_" + entry + "_prepack").str());
  addVoidStarStarWrapper(*llvmModule, "switchyard_prepack",
                         prepack && !prepack->isDeclaration() ? prepack
                                                              : nullptr);

  auto *text = llvm::ConstantDataArray::getString(llvmContext, manifest,
                                                  /*AddNull=*/true);
  new llvm::GlobalVariable(*llvmModule, text->getType(), /*isConstant=*/true,
                           llvm::GlobalValue::ExternalLinkage, text,
                           "switchyard_manifest");
  // Only the runtime's C API is exported from a shared library; the model's
  // own symbols stay inside it. (Symbols with local linkage, such as the
  // OpenMP lowering's private source-location constants, are not visible
  // anyway, and LLVM requires them to keep the default visibility.)
  for (llvm::GlobalValue &global : llvmModule->global_values())
    if (!global.isDeclaration() && !global.hasLocalLinkage())
      global.setVisibility(llvm::GlobalValue::HiddenVisibility);

  auto optimize = makeOptimizingTransformer(optLevel, /*sizeLevel=*/0, &machine);
  if (llvm::Error e = optimize(llvmModule.get())) {
    emitError(module.getLoc()) << "LLVM optimization failed: "
                               << llvm::toString(std::move(e));
    return nullptr;
  }
  return llvmModule;
}

LogicalResult switchyard::emitObjectFile(llvm::Module &module,
                                         llvm::TargetMachine &machine,
                                         llvm::StringRef path, Location loc) {
  std::error_code ec;
  llvm::ToolOutputFile out(path, ec, llvm::sys::fs::OF_None);
  if (ec)
    return emitError(loc) << "cannot write '" << path << "': " << ec.message();
  llvm::legacy::PassManager pm;
  if (machine.addPassesToEmitFile(pm, out.os(), nullptr,
                                  llvm::CodeGenFileType::ObjectFile))
    return emitError(loc) << "the target cannot emit object files";
  pm.run(module);
  out.os().flush();
  if (out.os().has_error())
    return emitError(loc) << "cannot write '" << path << "'";
  out.keep();
  return success();
}

/// Where the runtime archives are: $SWITCHYARD_RUNTIME_DIR, else the build
/// tree this compiler came from.
static std::string runtimeDir() {
  if (const char *dir = std::getenv("SWITCHYARD_RUNTIME_DIR"))
    return dir;
  return SWITCHYARD_RUNTIME_DIR;
}

LogicalResult switchyard::linkArtifact(llvm::StringRef objectPath,
                                       llvm::StringRef output,
                                       ArtifactKind kind, bool sanitize,
                                       Location loc,
                                       llvm::StringRef runtimeDirOverride) {
  llvm::ErrorOr<std::string> linker =
      llvm::sys::findProgramByName(SWITCHYARD_CLANGXX);
  if (!linker)
    return emitError(loc) << "cannot find the linker driver '"
                          << SWITCHYARD_CLANGXX << "' (install clang-22)";
  std::string dir =
      runtimeDirOverride.empty() ? runtimeDir() : runtimeDirOverride.str();
  std::string suffix = sanitize ? "Sanitized" : "";
  auto archive = [&](llvm::StringRef name) {
    llvm::SmallString<256> path(dir);
    llvm::sys::path::append(path, "lib" + name + suffix + ".a");
    return std::string(path);
  };
  std::string runtime = archive("SwitchyardRuntime");
  std::string mainArchive = archive("SwitchyardRuntimeMain");
  std::vector<std::string> needed{runtime};
  if (kind == ArtifactKind::Executable)
    needed.push_back(mainArchive);
  for (const std::string &path : needed)
    if (!llvm::sys::fs::exists(path))
      return emitError(loc) << "the runtime library '" << path
                            << "' is missing (build the project, or point "
                               "SWITCHYARD_RUNTIME_DIR at it)";
  std::string support = std::string(SWITCHYARD_LLVM_LIBRARY_DIR) +
                        "/libLLVMSupport.a";
  std::string demangle = std::string(SWITCHYARD_LLVM_LIBRARY_DIR) +
                         "/libLLVMDemangle.a";

  // A library exports the C API and nothing else: not the model's code, not
  // the weak C++ template instances the runtime pulls in from libstdc++.
  llvm::SmallString<128> versionScript;
  std::optional<llvm::FileRemover> removeVersionScript;
  if (kind == ArtifactKind::SharedLibrary) {
    int fd;
    if (std::error_code ec = llvm::sys::fs::createTemporaryFile(
            "moec-exports", "map", fd, versionScript))
      return emitError(loc)
             << "cannot create a temporary file: " << ec.message();
    removeVersionScript.emplace(versionScript);
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << "{ global: sy_*; local: *; };\n";
  }

  std::vector<std::string> args{*linker, "-o", output.str(),
                                objectPath.str()};
  if (kind == ArtifactKind::Executable) {
    args.push_back(mainArchive);
    args.push_back(runtime);
  } else {
    args.push_back("-shared");
    // Every sy_* function, even those the model object does not call.
    args.push_back("-Wl,--whole-archive");
    args.push_back(runtime);
    args.push_back("-Wl,--no-whole-archive");
    args.push_back("-Wl,--exclude-libs,libLLVMSupport.a:libLLVMDemangle.a");
    args.push_back(("-Wl,--version-script=" + versionScript).str());
  }
  for (const char *arg : {"-fopenmp", "-lm", "-lpthread"})
    args.push_back(arg);
  args.push_back(support);
  args.push_back(demangle);
  if (sanitize)
    args.push_back("-fsanitize=address,undefined");

  llvm::SmallString<128> errFile;
  if (std::error_code ec =
          llvm::sys::fs::createTemporaryFile("moec-link", "txt", errFile))
    return emitError(loc) << "cannot create a temporary file: "
                          << ec.message();
  llvm::SmallVector<llvm::StringRef> argRefs(args.begin(), args.end());
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, errFile.str(),
                                                errFile.str()};
  std::string execError;
  int rc = llvm::sys::ExecuteAndWait(*linker, argRefs, std::nullopt, redirects,
                                     0, 0, &execError);
  auto log = llvm::MemoryBuffer::getFile(errFile);
  llvm::sys::fs::remove(errFile);
  if (rc != 0) {
    llvm::sys::fs::remove(output);
    InFlightDiagnostic diag = emitError(loc) << "linking '" << output
                                             << "' failed";
    if (!execError.empty())
      diag << ": " << execError;
    if (log && !(*log)->getBuffer().empty())
      diag << ":\n" << (*log)->getBuffer().rtrim();
    diag << "\ncommand: " << llvm::join(args, " ");
    return failure();
  }
  return success();
}

LogicalResult switchyard::buildArtifact(llvm::Module &module,
                                        llvm::TargetMachine &machine,
                                        llvm::StringRef output,
                                        ArtifactKind kind, bool sanitize,
                                        llvm::StringRef manifest, Location loc,
                                        TimingScope &timing,
                                        llvm::StringRef runtimeDir) {
  llvm::SmallString<128> object;
  if (std::error_code ec =
          llvm::sys::fs::createTemporaryFile("switchyard", "o", object))
    return emitError(loc) << "cannot create a temporary file: "
                          << ec.message();
  llvm::FileRemover removeObject(object);
  {
    TimingScope t = timing.nest("Code generation");
    if (failed(emitObjectFile(module, machine, object, loc)))
      return failure();
  }
  {
    TimingScope t = timing.nest("Link");
    if (failed(linkArtifact(object, output, kind, sanitize, loc, runtimeDir)))
      return failure();
  }
  if (kind != ArtifactKind::SharedLibrary)
    return success();
  llvm::SmallString<128> header(output);
  llvm::sys::path::replace_extension(header, ".h");
  std::error_code ec;
  llvm::raw_fd_ostream os(header, ec);
  if (!ec) {
    os << generateHeader(manifest);
    os.close();
    ec = os.error();
  }
  if (ec)
    return emitError(loc) << "cannot write '" << header << "': "
                          << ec.message();
  return success();
}

std::string switchyard::generateHeader(llvm::StringRef manifest) {
  static const char kRuntimeHeader[] =
#include "switchyard/RuntimeHeader.inc"
      ;
  std::string out = "/* Generated by moec: the C API of one compiled model.\n"
                    " * Its manifest (docs/Artifacts.md):\n * ";
  for (char c : manifest) {
    out += c;
    if (c == '\n')
      out += " * ";
  }
  // Keep "*/" out of the comment even if a name holds it.
  size_t at;
  while ((at = out.find("*/", 60)) != std::string::npos)
    out.replace(at, 2, "* /");
  out += "\n */\n\n";
  out += kRuntimeHeader;
  return out;
}
