//===- Formats.h - npy and safetensors files --------------------*- C++ -*-===//
//
// Part of Switchyard's runtime. Readers validate everything a file claims
// (header lengths, offsets, sizes, dtypes) before any byte of data is
// touched, and report problems as llvm::Error naming the file, the tensor
// and the problem. Writers go through a temporary file and a rename, so a
// failed write never leaves a partial file behind.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_RUNTIME_FORMATS_H
#define SWITCHYARD_RUNTIME_FORMATS_H

#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace switchyard::runtime {

/// Element types the runtime moves around, by their MLIR spelling.
enum class DType { F32, BF16, F16, I64 };
llvm::StringRef dtypeName(DType t);
std::optional<DType> parseDType(llvm::StringRef mlirName);
size_t dtypeSize(DType t);

/// Product of `shape`, or an error when it overflows or is negative.
llvm::Expected<int64_t> elementCount(llvm::ArrayRef<int64_t> shape,
                                     llvm::StringRef what);

/// "[2, 3, 4]", as messages print shapes.
std::string shapeString(llvm::ArrayRef<int64_t> shape);

/// A view of a tensor's bytes, owned elsewhere.
struct TensorView {
  DType dtype;
  std::vector<int64_t> shape;
  const char *data = nullptr;
  size_t bytes = 0;
};

//===-- npy ---------------------------------------------------------------===//

struct NpyArray {
  TensorView view;
  std::unique_ptr<llvm::MemoryBuffer> buffer;
  /// How numpy named the dtype, for messages ("<f4").
  std::string descr;
};

/// Parses an npy (version 1, 2 or 3) file's bytes. bf16 is accepted as the
/// 2-byte void type ml_dtypes writes ("|V2" / "<V2").
llvm::Expected<NpyArray> parseNpy(std::unique_ptr<llvm::MemoryBuffer> buffer);
llvm::Expected<NpyArray> readNpy(llvm::StringRef path);
/// Writes a C-order npy file (f32 "<f4", f16 "<f2", i64 "<i8"; bf16 "<V2").
llvm::Error writeNpy(llvm::StringRef path, const TensorView &tensor);

//===-- safetensors -------------------------------------------------------===//

class SafeTensorsFile {
public:
  /// Validates the header and every tensor's offsets against the data.
  static llvm::Expected<std::unique_ptr<SafeTensorsFile>>
  parse(std::unique_ptr<llvm::MemoryBuffer> buffer);
  static llvm::Expected<std::unique_ptr<SafeTensorsFile>>
  open(llvm::StringRef path);

  struct Entry {
    std::string dtypeName; ///< as the file spells it: "F32", "BF16", ...
    bool supported;        ///< whether `view.dtype` is meaningful
    TensorView view;
  };
  const Entry *lookup(llvm::StringRef name) const;
  llvm::StringRef path() const { return buffer->getBufferIdentifier(); }
  std::vector<std::string> names() const;

private:
  std::unique_ptr<llvm::MemoryBuffer> buffer;
  llvm::StringMap<Entry> tensors;
};

struct NamedTensor {
  std::string name;
  TensorView view;
};
llvm::Error writeSafeTensors(llvm::StringRef path,
                             llvm::ArrayRef<NamedTensor> tensors);

/// Whether `path` exists and is neither a regular file nor a directory (a
/// device such as /dev/null, a pipe): written in place.
bool isSpecialFile(llvm::StringRef path);
/// Fails with "cannot write 'path': reason" unless a file can be created in
/// `path`'s directory (or `path`, a special file, can be written); leaves
/// nothing behind. Lets a program refuse before a long run instead of after
/// it.
llvm::Error checkWritable(llvm::StringRef path);
/// Writes `pieces` to `path` through a temporary file and a rename, or
/// straight into a special file.
llvm::Error writeFileAtomically(llvm::StringRef path,
                                llvm::ArrayRef<llvm::StringRef> pieces);

//===-- conversions -------------------------------------------------------===//

float bf16ToFloat(uint16_t v);
uint16_t floatToBF16(float v);
float f16ToFloat(uint16_t v);
uint16_t floatToF16(float v);

} // namespace switchyard::runtime

#endif // SWITCHYARD_RUNTIME_FORMATS_H
