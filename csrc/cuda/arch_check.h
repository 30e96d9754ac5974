// Whether a build holds code that a GPU can run, as a pure function of the GPU's compute capability
// and the build's list of architectures ("sm_75 ... compute_120": HDAS_CUDA_ARCHS, which setup.py
// and CMakeLists.txt read off nvcc's -gencode flags). Without such code the first launch fails with CUDA's "no kernel
// image is available"; the launchers check once per device instead (runtime.cuh), and Python tests
// the rules through hdas_ext._C.cuda_arch_error. Torch-free: module.cpp includes it in every build.
#pragma once

#include <string>
#include <vector>

namespace hdas {

struct CudaArch {
  bool ptx;     // compute_XY (PTX) rather than sm_XY (SASS)
  int cc;       // 10 * major + minor
  char suffix;  // 'a' (this capability only), 'f' (its family), or 0
};

// "sm_90a" -> {false, 90, 'a'}; ok = false when the entry is not of that form.
inline CudaArch parse_cuda_arch(const std::string& s, bool& ok) {
  CudaArch a{s.rfind("compute_", 0) == 0, 0, 0};
  size_t i = a.ptx ? 8 : (s.rfind("sm_", 0) == 0 ? 3 : std::string::npos);
  ok = i != std::string::npos && i < s.size();
  for (; ok && i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) a.cc = 10 * a.cc + (s[i] - '0');
  if (ok && i + 1 == s.size() && (s[i] == 'a' || s[i] == 'f')) a.suffix = s[i++];
  ok = ok && i == s.size() && a.cc >= 10;
  return a;
}

// CUDA's rules: SASS for X.Y runs on X.Z with Z >= Y ('a': on X.Y only); PTX for X.Y is compiled by
// the driver for any capability >= X.Y ('a': X.Y only; 'f': X.Z with Z >= Y).
inline bool cuda_arch_runs_on(const CudaArch& a, int major, int minor) {
  const int cc = 10 * major + minor;
  if (a.suffix == 'a') return cc == a.cc;
  if (a.ptx && a.suffix != 'f') return cc >= a.cc;
  return major == a.cc / 10 && minor >= a.cc % 10;
}

// "" when the build (`built`, entries split by spaces or ';') runs on a GPU of capability major.minor; else
// the error to raise, naming the built list and how to rebuild.
inline std::string cuda_arch_error(int major, int minor, const std::string& built) {
  std::vector<std::string> sass, ptx;
  std::string bad;
  for (size_t start = 0; start <= built.size();) {
    size_t end = built.find_first_of(" ;", start);
    if (end == std::string::npos) end = built.size();
    const std::string entry = built.substr(start, end - start);
    start = end + 1;
    if (entry.empty()) continue;
    bool ok = false;
    const CudaArch a = parse_cuda_arch(entry, ok);
    if (!ok) bad = entry;
    else if (cuda_arch_runs_on(a, major, minor)) return "";
    else (a.ptx ? ptx : sass).push_back(entry);
  }
  const auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& e : v) s += (s.empty() ? "" : " ") + e;
    return s.empty() ? std::string("none") : s;
  };
  const std::string cap = std::to_string(major) + "." + std::to_string(minor);
  return "hdas_ext was built for CUDA architectures SASS " + join(sass) + ", PTX " + join(ptx) +
         (bad.empty() ? "" : " (unreadable entry '" + bad + "')") + ", none of which runs on a GPU of compute capability " +
         cap + ". Rebuild it for this GPU from the source tree: TORCH_CUDA_ARCH_LIST=" + cap +
         " pip install --no-build-isolation -e . (docs/building.md)";
}

}  // namespace hdas
