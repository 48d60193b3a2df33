//===- Formats.cpp - npy and safetensors files ----------------------------===//
//
// Part of Switchyard's runtime.
//
//===----------------------------------------------------------------------===//

#include "Formats.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>

using namespace llvm;
using namespace switchyard::runtime;

namespace {
Error formatError(StringRef file, const Twine &msg) {
  return createStringError(inconvertibleErrorCode(),
                           "'" + file.str() + "': " + msg.str());
}

/// The file at `path`, memory-mapped where the system allows, or "cannot
/// read <what>'path': why". A pipe (`--input /dev/stdin`) is read until its
/// writer closes it; a device is refused before it is opened, since it would
/// be read until it ends, and /dev/zero never does.
Expected<std::unique_ptr<MemoryBuffer>> readFile(StringRef path,
                                                 StringRef what) {
  auto cannotRead = [&](std::error_code ec, const Twine &why) {
    return createStringError(ec, "cannot read " + what.str() + "'" +
                                     path.str() + "': " + why.str());
  };
  sys::fs::file_status status;
  if (std::error_code ec = sys::fs::status(path, status))
    return cannotRead(ec, ec.message());
  if (sys::fs::is_directory(status)) {
    auto ec = std::make_error_code(std::errc::is_a_directory);
    return cannotRead(ec, ec.message());
  }
  if (status.type() != sys::fs::file_type::regular_file &&
      status.type() != sys::fs::file_type::fifo_file)
    return cannotRead(std::make_error_code(std::errc::invalid_argument),
                      "not a regular file or a pipe");
  auto buffer = MemoryBuffer::getFile(path, /*IsText=*/false,
                                      /*RequiresNullTerminator=*/false);
  if (!buffer)
    return cannotRead(buffer.getError(), buffer.getError().message());
  return std::move(*buffer);
}
} // namespace

StringRef switchyard::runtime::dtypeName(DType t) {
  switch (t) {
  case DType::F32:
    return "f32";
  case DType::BF16:
    return "bf16";
  case DType::F16:
    return "f16";
  case DType::I64:
    return "i64";
  }
  llvm_unreachable("unknown dtype");
}

std::optional<DType> switchyard::runtime::parseDType(StringRef name) {
  return StringSwitch<std::optional<DType>>(name)
      .Case("f32", DType::F32)
      .Case("bf16", DType::BF16)
      .Case("f16", DType::F16)
      .Case("i64", DType::I64)
      .Default(std::nullopt);
}

size_t switchyard::runtime::dtypeSize(DType t) {
  switch (t) {
  case DType::F32:
    return 4;
  case DType::BF16:
  case DType::F16:
    return 2;
  case DType::I64:
    return 8;
  }
  llvm_unreachable("unknown dtype");
}

Expected<int64_t> switchyard::runtime::elementCount(ArrayRef<int64_t> shape,
                                                    StringRef what) {
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0)
      return createStringError(inconvertibleErrorCode(),
                               what + ": negative dimension " + Twine(d));
    if (d != 0 && count > (int64_t(1) << 56) / d)
      return createStringError(inconvertibleErrorCode(),
                               what + ": shape is too large");
    count *= d;
  }
  return count;
}

std::string switchyard::runtime::shapeString(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (auto [i, d] : llvm::enumerate(shape))
    s += (i ? ", " : "") + std::to_string(d);
  return s + "]";
}

//===----------------------------------------------------------------------===//
// npy
//===----------------------------------------------------------------------===//

namespace {
/// Reads the Python dict literal of an npy header:
///   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class NpyHeaderParser {
public:
  explicit NpyHeaderParser(StringRef text) : rest(text) {}

  Error parse(std::string &descr, bool &fortran, std::vector<int64_t> &shape) {
    bool sawDescr = false, sawFortran = false, sawShape = false;
    if (!consume("{"))
      return fail("expected '{'");
    while (!peek("}")) {
      std::string key;
      if (!readString(key))
        return fail("expected a quoted key");
      if (!consume(":"))
        return fail("expected ':' after '" + key + "'");
      if ((key == "descr" && sawDescr) ||
          (key == "fortran_order" && sawFortran) ||
          (key == "shape" && sawShape))
        return fail("duplicate key '" + key + "'");
      if (key == "descr") {
        if (!readString(descr))
          return fail("'descr' must be a string");
        sawDescr = true;
      } else if (key == "fortran_order") {
        if (consume("True"))
          fortran = true;
        else if (consume("False"))
          fortran = false;
        else
          return fail("'fortran_order' must be True or False");
        sawFortran = true;
      } else if (key == "shape") {
        if (!consume("("))
          return fail("'shape' must be a tuple");
        while (!consume(")")) {
          rest = rest.ltrim();
          size_t digits = rest.find_first_not_of("0123456789");
          uint64_t d;
          if (digits == 0 || rest.substr(0, digits).getAsInteger(10, d))
            return fail("'shape' must hold non-negative integers");
          if (d > (uint64_t(1) << 48))
            return fail("'shape' has a dimension too large (" +
                        rest.substr(0, digits) + ")");
          shape.push_back(static_cast<int64_t>(d));
          rest = rest.drop_front(digits == StringRef::npos ? rest.size()
                                                           : digits);
          if (!consume(",") && !peek(")"))
            return fail("expected ',' or ')' in 'shape'");
        }
        sawShape = true;
      } else {
        return fail("unknown key '" + key + "'");
      }
      if (!consume(",") && !peek("}"))
        return fail("expected ',' or '}'");
    }
    if (!sawDescr || !sawFortran || !sawShape)
      return fail("the header needs 'descr', 'fortran_order' and 'shape'");
    return Error::success();
  }

private:
  bool peek(StringRef token) {
    rest = rest.ltrim();
    return rest.starts_with(token);
  }
  bool consume(StringRef token) {
    if (!peek(token))
      return false;
    rest = rest.drop_front(token.size());
    return true;
  }
  bool readString(std::string &out) {
    rest = rest.ltrim();
    if (rest.empty() || (rest[0] != '\'' && rest[0] != '"'))
      return false;
    char quote = rest[0];
    size_t end = rest.find(quote, 1);
    if (end == StringRef::npos)
      return false;
    out = rest.slice(1, end).str();
    rest = rest.drop_front(end + 1);
    return true;
  }
  Error fail(const Twine &msg) {
    return createStringError(inconvertibleErrorCode(),
                             "bad npy header: " + msg.str());
  }

  StringRef rest;
};
} // namespace

Expected<NpyArray>
switchyard::runtime::parseNpy(std::unique_ptr<MemoryBuffer> buffer) {
  StringRef file = buffer->getBufferIdentifier();
  StringRef bytes = buffer->getBuffer();
  if (bytes.size() < 10 || !bytes.starts_with("\x93NUMPY"))
    return formatError(file, "not an npy file (no \\x93NUMPY magic)");
  uint8_t major = bytes[6];
  size_t headerLen, headerStart;
  if (major == 1) {
    headerLen = support::endian::read16le(bytes.data() + 8);
    headerStart = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12)
      return formatError(file, "truncated npy header");
    headerLen = support::endian::read32le(bytes.data() + 8);
    headerStart = 12;
  } else {
    return formatError(file, "unsupported npy version " + Twine(unsigned(major)));
  }
  if (headerLen > bytes.size() - headerStart)
    return formatError(file, "truncated: the header claims " +
                                 Twine(headerLen) + " bytes, the file has " +
                                 Twine(bytes.size() - headerStart) +
                                 " after the preamble");
  NpyArray array;
  bool fortran = false;
  if (Error e = NpyHeaderParser(bytes.substr(headerStart, headerLen))
                    .parse(array.descr, fortran, array.view.shape))
    return formatError(file, toString(std::move(e)));
  if (fortran)
    return formatError(file, "Fortran-order arrays are not supported; save "
                             "a C-contiguous array");
  StringRef descr = array.descr;
  if (descr == "<f4" || descr == "=f4")
    array.view.dtype = DType::F32;
  else if (descr == "<f2" || descr == "=f2")
    array.view.dtype = DType::F16;
  else if (descr == "<V2" || descr == "|V2")
    array.view.dtype = DType::BF16;
  else if (descr == "<i8" || descr == "=i8")
    array.view.dtype = DType::I64;
  else if (descr.size() > 1 && descr[0] == '>')
    return formatError(file, "big-endian data ('" + descr +
                                 "') is not supported; save little-endian");
  else
    return formatError(file, "unsupported dtype '" + descr +
                                 "' (expected float32 '<f4', float16 '<f2' "
                                 "or bfloat16 '<V2')");
  Expected<int64_t> count = elementCount(array.view.shape, file);
  if (!count)
    return count.takeError();
  size_t dataStart = headerStart + headerLen;
  uint64_t need = uint64_t(*count) * dtypeSize(array.view.dtype);
  uint64_t have = bytes.size() - dataStart;
  if (have < need)
    return formatError(file, "truncated: shape " +
                                 shapeString(array.view.shape) + " needs " +
                                 Twine(need) + " bytes of data, the file has " +
                                 Twine(have));
  if (have > need)
    return formatError(file, Twine(have - need) +
                                 " bytes of trailing data after shape " +
                                 shapeString(array.view.shape));
  array.view.data = bytes.data() + dataStart;
  array.view.bytes = need;
  array.buffer = std::move(buffer);
  return array;
}

Expected<NpyArray> switchyard::runtime::readNpy(StringRef path) {
  Expected<std::unique_ptr<MemoryBuffer>> buffer = readFile(path, "");
  if (!buffer)
    return buffer.takeError();
  return parseNpy(std::move(*buffer));
}

Error switchyard::runtime::writeNpy(StringRef path, const TensorView &t) {
  const char *descr = t.dtype == DType::F32    ? "<f4"
                      : t.dtype == DType::F16  ? "<f2"
                      : t.dtype == DType::BF16 ? "<V2"
                                               : "<i8";
  std::string header = "{'descr': '" + std::string(descr) +
                       "', 'fortran_order': False, 'shape': (";
  for (int64_t d : t.shape)
    header += std::to_string(d) + ", ";
  if (!t.shape.empty()) {
    header.pop_back();
    if (t.shape.size() > 1)
      header.pop_back();
  }
  header += "), }";
  // Pad so that the data starts on a 64-byte boundary (version 1 layout).
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string preamble = "\x93NUMPY\x01";
  preamble += '\0';
  preamble += char(header.size() & 0xff);
  preamble += char(header.size() >> 8);
  return writeFileAtomically(
      path, {preamble, header, StringRef(t.data, t.bytes)});
}

//===----------------------------------------------------------------------===//
// safetensors
//===----------------------------------------------------------------------===//

static std::optional<size_t> safetensorsDTypeSize(StringRef name) {
  return StringSwitch<std::optional<size_t>>(name)
      .Cases({"F64", "I64", "U64"}, 8)
      .Cases({"F32", "I32", "U32"}, 4)
      .Cases({"F16", "BF16", "I16", "U16"}, 2)
      .Cases({"I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"}, 1)
      .Default(std::nullopt);
}

static std::optional<DType> safetensorsDType(StringRef name) {
  return StringSwitch<std::optional<DType>>(name)
      .Case("F32", DType::F32)
      .Case("BF16", DType::BF16)
      .Case("F16", DType::F16)
      .Case("I64", DType::I64)
      .Default(std::nullopt);
}

static StringRef safetensorsName(DType t) {
  switch (t) {
  case DType::F32:
    return "F32";
  case DType::BF16:
    return "BF16";
  case DType::F16:
    return "F16";
  case DType::I64:
    return "I64";
  }
  llvm_unreachable("unknown dtype");
}

Expected<std::unique_ptr<SafeTensorsFile>>
SafeTensorsFile::parse(std::unique_ptr<MemoryBuffer> buffer) {
  StringRef file = buffer->getBufferIdentifier();
  StringRef bytes = buffer->getBuffer();
  if (bytes.size() < 8)
    return formatError(file, "truncated: a safetensors file starts with an "
                             "8-byte header length, the file has " +
                                 Twine(bytes.size()) + " bytes");
  uint64_t headerLen = support::endian::read64le(bytes.data());
  if (headerLen > bytes.size() - 8)
    return formatError(file, "the header length (" + Twine(headerLen) +
                                 " bytes) runs past the end of the file (" +
                                 Twine(bytes.size()) + " bytes)");
  StringRef header = bytes.substr(8, headerLen);
  StringRef data = bytes.substr(8 + headerLen);
  Expected<json::Value> parsed = json::parse(header);
  if (!parsed)
    return formatError(file, "bad JSON header: " +
                                 toString(parsed.takeError()));
  json::Object *root = parsed->getAsObject();
  if (!root)
    return formatError(file, "the JSON header is not an object");

  auto result = std::unique_ptr<SafeTensorsFile>(new SafeTensorsFile());
  // Every tensor's byte range, to check that they tile the data.
  std::vector<std::tuple<int64_t, int64_t, std::string>> ranges;
  for (auto &[key, value] : *root) {
    std::string name = key.str();
    if (name == "__metadata__") {
      const json::Object *metadata = value.getAsObject();
      if (!metadata || llvm::any_of(*metadata, [](const auto &kv) {
            return !kv.second.getAsString();
          }))
        return formatError(file, "__metadata__ must map names to strings");
      continue;
    }
    auto bad = [&](const Twine &msg) {
      return formatError(file, "tensor '" + name + "': " + msg);
    };
    json::Object *info = value.getAsObject();
    if (!info)
      return bad("expected an object with dtype, shape and data_offsets");
    std::optional<StringRef> dtype = info->getString("dtype");
    json::Array *shape = info->getArray("shape");
    json::Array *offsets = info->getArray("data_offsets");
    if (!dtype || !shape || !offsets)
      return bad("expected an object with dtype, shape and data_offsets");
    std::optional<size_t> elementSize = safetensorsDTypeSize(*dtype);
    if (!elementSize)
      return bad("unknown dtype '" + *dtype + "'");
    Entry entry;
    entry.dtypeName = dtype->str();
    std::optional<DType> known = safetensorsDType(*dtype);
    entry.supported = known.has_value();
    entry.view.dtype = known.value_or(DType::F32);
    for (const json::Value &d : *shape) {
      std::optional<int64_t> dim = d.getAsInteger();
      if (!dim || *dim < 0)
        return bad("the shape must hold non-negative integers");
      entry.view.shape.push_back(*dim);
    }
    Expected<int64_t> count = elementCount(entry.view.shape, "tensor '" + name + "'");
    if (!count)
      return formatError(file, toString(count.takeError()));
    std::optional<int64_t> begin, end;
    if (offsets->size() == 2) {
      begin = (*offsets)[0].getAsInteger();
      end = (*offsets)[1].getAsInteger();
    }
    if (!begin || !end || *begin < 0 || *end < *begin)
      return bad("data_offsets must be [begin, end] with 0 <= begin <= end");
    if (uint64_t(*end) > data.size())
      return bad("data_offsets [" + Twine(*begin) + ", " + Twine(*end) +
                 "] lie outside the " + Twine(data.size()) +
                 " bytes of data");
    uint64_t need = uint64_t(*count) * *elementSize;
    if (uint64_t(*end - *begin) != need)
      return bad("data_offsets cover " + Twine(*end - *begin) +
                 " bytes, but shape " + shapeString(entry.view.shape) +
                 " of " + *dtype + " needs " + Twine(need));
    entry.view.data = data.data() + *begin;
    entry.view.bytes = need;
    result->tensors[name] = std::move(entry);
    ranges.emplace_back(*begin, *end, name);
  }
  // As the format requires: the tensors cover the data exactly, without
  // overlaps or holes (a file that is something else too is refused).
  llvm::sort(ranges);
  int64_t covered = 0;
  for (const auto &[begin, end, name] : ranges) {
    if (begin < covered)
      return formatError(file, "tensor '" + name + "': data_offsets [" +
                                   Twine(begin) + ", " + Twine(end) +
                                   "] overlap another tensor's");
    if (begin > covered)
      return formatError(file, "bytes " + Twine(covered) + " to " +
                                   Twine(begin) +
                                   " of the data belong to no tensor");
    covered = end;
  }
  if (uint64_t(covered) != data.size())
    return formatError(file, Twine(data.size() - covered) +
                                 " bytes of data after the last tensor");
  result->buffer = std::move(buffer);
  return result;
}

Expected<std::unique_ptr<SafeTensorsFile>>
SafeTensorsFile::open(StringRef path) {
  Expected<std::unique_ptr<MemoryBuffer>> buffer = readFile(path, "weights ");
  if (!buffer)
    return buffer.takeError();
  return parse(std::move(*buffer));
}

const SafeTensorsFile::Entry *SafeTensorsFile::lookup(StringRef name) const {
  auto it = tensors.find(name);
  return it == tensors.end() ? nullptr : &it->second;
}

std::vector<std::string> SafeTensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto &entry : tensors)
    out.push_back(entry.getKey().str());
  llvm::sort(out);
  return out;
}

Error switchyard::runtime::writeSafeTensors(StringRef path,
                                            ArrayRef<NamedTensor> tensors) {
  json::Object header;
  uint64_t offset = 0;
  std::vector<StringRef> pieces;
  for (const NamedTensor &t : tensors) {
    json::Array shape;
    for (int64_t d : t.view.shape)
      shape.push_back(d);
    header[t.name] = json::Object{
        {"dtype", safetensorsName(t.view.dtype)},
        {"shape", std::move(shape)},
        {"data_offsets", json::Array{int64_t(offset),
                                     int64_t(offset + t.view.bytes)}}};
    offset += t.view.bytes;
  }
  std::string text;
  raw_string_ostream os(text);
  os << json::Value(std::move(header));
  // Pad the header with spaces so the data starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  char length[8];
  support::endian::write64le(length, text.size());
  pieces.push_back(StringRef(length, 8));
  pieces.push_back(text);
  for (const NamedTensor &t : tensors)
    pieces.push_back(StringRef(t.view.data, t.view.bytes));
  return writeFileAtomically(path, pieces);
}

//===----------------------------------------------------------------------===//
// Files
//===----------------------------------------------------------------------===//

static Error cannotWrite(StringRef path, std::error_code ec) {
  return createStringError(ec, "cannot write '" + path.str() +
                                   "': " + ec.message());
}

bool switchyard::runtime::isSpecialFile(StringRef path) {
  sys::fs::file_status status;
  return !sys::fs::status(path, status) &&
         status.type() != sys::fs::file_type::regular_file &&
         status.type() != sys::fs::file_type::directory_file &&
         status.type() != sys::fs::file_type::file_not_found;
}

Error switchyard::runtime::checkWritable(StringRef path) {
  if (sys::fs::is_directory(path))
    return cannotWrite(path, std::make_error_code(std::errc::is_a_directory));
  if (isSpecialFile(path)) {
    if (std::error_code ec = sys::fs::access(path, sys::fs::AccessMode::Write))
      return cannotWrite(path, ec);
    return Error::success();
  }
  SmallString<128> temp;
  int fd;
  if (std::error_code ec =
          sys::fs::createUniqueFile(path + ".tmp-%%%%%%", fd, temp))
    return cannotWrite(path, ec);
  sys::fs::closeFile(fd);
  sys::fs::remove(temp);
  return Error::success();
}

Error switchyard::runtime::writeFileAtomically(StringRef path,
                                               ArrayRef<StringRef> pieces) {
  // A device (/dev/null) or a pipe is written as it is: a rename would
  // replace it with a regular file.
  bool special = isSpecialFile(path);
  SmallString<128> temp;
  int fd;
  if (std::error_code ec =
          special
              ? sys::fs::openFileForWrite(path, fd, sys::fs::CD_OpenExisting)
              : sys::fs::createUniqueFile(path + ".tmp-%%%%%%", fd, temp))
    return cannotWrite(path, ec);
  {
    raw_fd_ostream os(fd, /*shouldClose=*/true);
    for (StringRef piece : pieces)
      os << piece;
    os.close();
    if (os.has_error()) {
      std::error_code ec = os.error();
      os.clear_error();
      if (!special)
        sys::fs::remove(temp);
      return cannotWrite(path, ec);
    }
  }
  if (special)
    return Error::success();
  if (std::error_code ec = sys::fs::rename(temp, path)) {
    sys::fs::remove(temp);
    return cannotWrite(path, ec);
  }
  return Error::success();
}

//===----------------------------------------------------------------------===//
// Conversions
//===----------------------------------------------------------------------===//

float switchyard::runtime::bf16ToFloat(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t switchyard::runtime::floatToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffff) > 0x7f800000) // NaN: keep it quiet and a NaN
    return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fff + ((bits >> 16) & 1); // round to nearest even
  return uint16_t(bits >> 16);
}

float switchyard::runtime::f16ToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else { // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while (!(mant & 0x400));
      bits = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else {
    bits = sign | (exp + 112) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t switchyard::runtime::floatToF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint16_t sign = (bits >> 16) & 0x8000;
  uint32_t absBits = bits & 0x7fffffff;
  if (absBits > 0x7f800000)
    return sign | 0x7e00;
  if (absBits >= 0x477ff000) // rounds to >= 65520: infinity
    return sign | 0x7c00;
  if (absBits < 0x38800000) { // subnormal or zero in f16
    float a;
    std::memcpy(&a, &absBits, 4);
    // 2^-24 is the f16 subnormal step; rint rounds to nearest even.
    return sign | uint16_t(__builtin_rintf(a * 16777216.0f));
  }
  uint32_t mant = absBits & 0x7fffff;
  uint32_t exp = (absBits >> 23) - 112;
  uint32_t h = exp << 10 | mant >> 13;
  uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
    ++h;
  return sign | uint16_t(h);
}
