#pragma once
// One file in a private temporary directory that a fuzz target rewrites with each input, for the
// loaders that read a path. The directory holds nothing else (relative paths in the input resolve
// against it) and is removed at exit.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace va::fuzz {

class TempFile {
 public:
  explicit TempFile(std::string_view name) {
    std::string dir = (std::filesystem::temp_directory_path() / "va-fuzz-XXXXXX").string();
    if (mkdtemp(dir.data()) == nullptr) {
      std::abort();
    }
    dir_ = dir;
    path_ = (dir_ / name).string();
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& write(std::string_view bytes) {
    std::ofstream(path_, std::ios::binary | std::ios::trunc)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path_;
  }

 private:
  std::filesystem::path dir_;
  std::string path_;
};

}  // namespace va::fuzz
