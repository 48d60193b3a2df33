//===- Compiler.h - From a model file to artifacts --------------*- C++ -*-===//
//
// Part of Switchyard. The steps `moec` runs, as a library so the Python
// package runs the very same ones: load a model (YAML or .mlir), lower it
// with the named pipeline, translate to LLVM IR with the runtime's entry
// point and manifest, emit an object, link an executable or a library.
// Failures are reported as MLIR diagnostics on the module's context.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_DRIVER_COMPILER_H
#define SWITCHYARD_DRIVER_COMPILER_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Support/LLVM.h"
#include "mlir/Support/Timing.h"
#include "llvm/ADT/StringRef.h"

#include <memory>
#include <optional>
#include <string>

namespace llvm {
class LLVMContext;
class Module;
class SourceMgr;
class TargetMachine;
} // namespace llvm

namespace mlir {
class PassManager;
} // namespace mlir

namespace switchyard {

/// Where the IR can be stopped, in pipeline order.
enum class Stage {
  Layer,   ///< the moe dialect, one op per block
  Routing, ///< the moe dialect, routing level (moe-decompose)
  Fused,   ///< the routing level after the fusion passes
  Linalg,  ///< linalg/tensor/scf/arith/math on tensors
  Loops,   ///< bufferized, lowered to loops
  LLVM,    ///< the LLVM dialect
};
std::optional<Stage> parseStage(llvm::StringRef name);
llvm::StringRef stringifyStage(Stage stage);

/// Whether the host CPU has the AVX-512 BF16 dot-product instruction
/// (`avx512bf16`), which the compiled code may then use.
bool hostHasBF16DotProducts();

/// Whether the host CPU has AMX tiles with bf16 products (`amx-tile` and
/// `amx-bf16`).
bool hostHasBF16Amx();

struct CompileOptions;

/// Whether `options` multiply bf16 expert weights on AMX tiles: as
/// `bf16Amx` says, or unset, when the host has them and dot products were
/// not asked for. The code is compiled for the host: on the Intel Xeon of
/// 2026-12-02 the bf16 Switch block ran 4.8x faster on AMX
/// (docs/Rationale.md).
bool usesBF16Amx(const CompileOptions &options);

struct CompileOptions {
  Stage stage = Stage::LLVM;
  bool parallel = true;
  bool fusion = true; ///< run the moe fusion passes
  /// Multiply bf16 expert weights with the AVX-512 BF16 dot-product
  /// instruction (the host must have it: lowerToStage fails otherwise). Off
  /// by default: on the Intel Xeon we measured, it runs at 0.60x the rate
  /// of the f32 FMAs it replaces (docs/Rationale.md).
  bool bf16DotProducts = false;
  /// Multiply bf16 expert weights on AMX tiles (the host must have them:
  /// lowerToStage fails otherwise). Unset, usesBF16Amx decides.
  std::optional<bool> bf16Amx;
  unsigned optLevel = 3; ///< LLVM's -O level, 0 to 3
};

/// Loads the main buffer of `sourceMgr`: a YAML model description when its
/// name ends in .yaml or .yml, else an MLIR module. Returns null after
/// emitting diagnostics.
mlir::OwningOpRef<mlir::ModuleOp> loadModel(llvm::SourceMgr &sourceMgr,
                                            mlir::MLIRContext *context);

/// What keeps `options` from compiling for the host, or nothing: bf16 dot
/// products or AMX tiles, not both, each only where the host has it. moec
/// reports it as a command-line error.
std::optional<std::string> compileOptionsProblem(const CompileOptions &options);

/// Emits compileOptionsProblem's message at `loc` when there is one.
/// lowerToStage checks the same before it runs anything.
mlir::LogicalResult checkCompileOptions(const CompileOptions &options,
                                        mlir::Location loc);

/// Runs the CPU pipeline up to `options.stage`. `configure`, when given,
/// sets up instrumentation (IR printing, timing) on the pass manager.
mlir::LogicalResult
lowerToStage(mlir::ModuleOp module, const CompileOptions &options,
             llvm::function_ref<mlir::LogicalResult(mlir::PassManager &)>
                 configure = {});

/// A target machine for the host CPU (its SIMD features included).
std::unique_ptr<llvm::TargetMachine> createHostTargetMachine(unsigned optLevel,
                                                             std::string &error);

/// Translates an LLVM-dialect module to LLVM IR, adds the runtime's entry
/// points (`switchyard_entry`, calling `entry`'s C interface, and
/// `switchyard_prepack`, calling `<entry>_prepack`'s or doing nothing) and
/// the manifest (`switchyard_manifest`), and optimizes it for `machine`.
/// `manifest` gets the packed weights the pipeline recorded
/// (`"prepack"`, from the module's `switchyard.prepack`).
std::unique_ptr<llvm::Module>
translateToLLVMIR(mlir::ModuleOp module, llvm::LLVMContext &llvmContext,
                  llvm::StringRef entry, std::string &manifest,
                  llvm::TargetMachine &machine, unsigned optLevel);

/// Writes `module` as an object file.
mlir::LogicalResult emitObjectFile(llvm::Module &module,
                                   llvm::TargetMachine &machine,
                                   llvm::StringRef path, mlir::Location loc);

enum class ArtifactKind { Executable, SharedLibrary };

/// Links `objectPath` with the runtime into an executable or a shared
/// library. `sanitize` links the runtime built with AddressSanitizer and
/// UndefinedBehaviorSanitizer instead. The runtime archives are taken from
/// `runtimeDir`, else $SWITCHYARD_RUNTIME_DIR, else this build's.
mlir::LogicalResult linkArtifact(llvm::StringRef objectPath,
                                 llvm::StringRef output, ArtifactKind kind,
                                 bool sanitize, mlir::Location loc,
                                 llvm::StringRef runtimeDir = "");

/// Code generation and linking in one step: emits `module` as an object in
/// a temporary file, links it with the runtime into `output` (see
/// linkArtifact), and beside a shared library writes its C header (`output`
/// with the extension `.h`). Times "Code generation" and "Link" under
/// `timing`.
mlir::LogicalResult buildArtifact(llvm::Module &module,
                                  llvm::TargetMachine &machine,
                                  llvm::StringRef output, ArtifactKind kind,
                                  bool sanitize, llvm::StringRef manifest,
                                  mlir::Location loc, mlir::TimingScope &timing,
                                  llvm::StringRef runtimeDir = "");

/// The C header of a shared library built from a model with `manifest`.
std::string generateHeader(llvm::StringRef manifest);

} // namespace switchyard

#endif // SWITCHYARD_DRIVER_COMPILER_H
