//===- FormatsFuzzer.cpp - libFuzzer targets for the npy and safetensors readers
//
// Part of Switchyard. Built twice: with SWITCHYARD_FUZZ_NPY for the npy
// reader, without it for the safetensors reader. Any bytes must give a valid
// file whose every tensor lies inside the buffer, or an error.
//
//===----------------------------------------------------------------------===//

#include "Formats.h"

#include <cstddef>
#include <cstdint>

using namespace switchyard::runtime;

/// Touches every byte the reader claims is a tensor, so that ASan catches a
/// view outside the buffer.
static void touch(const TensorView &view) {
  volatile unsigned sum = 0;
  for (size_t i = 0; i < view.bytes; ++i)
    sum = sum + static_cast<unsigned char>(view.data[i]);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // A copy of exactly `size` bytes, so reads past the end are caught.
  std::unique_ptr<llvm::MemoryBuffer> buffer =
      llvm::MemoryBuffer::getMemBufferCopy(
          llvm::StringRef(reinterpret_cast<const char *>(data), size),
          "fuzz");
#ifdef SWITCHYARD_FUZZ_NPY
  llvm::Expected<NpyArray> array = parseNpy(std::move(buffer));
  if (!array) {
    llvm::consumeError(array.takeError());
    return 0;
  }
  touch(array->view);
#else
  auto file = SafeTensorsFile::parse(std::move(buffer));
  if (!file) {
    llvm::consumeError(file.takeError());
    return 0;
  }
  for (const std::string &name : (*file)->names())
    touch((*file)->lookup(name)->view);
#endif
  return 0;
}
