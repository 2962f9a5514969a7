// Fuzz target: the kubeconfig loader. The input is the file. Whatever it holds, the loader either
// returns a cluster to talk to or throws ConfigError naming the problems: any other exception or a
// crash is a finding. A cluster it returns has a host, a port and a credential source no more than
// one of which is an exec plugin.
#include <cstdint>

#include "core/config_error.hpp"
#include "fuzz/check.hpp"
#include "fuzz/temp_file.hpp"
#include "k8s/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static va::fuzz::TempFile file("kubeconfig");
  const auto& path = file.write({reinterpret_cast<const char*>(data), size});
  try {
    const auto c = va::k8s::load_kubeconfig_files({path});
    VA_FUZZ_CHECK(!c.host.empty() && !c.port.empty(), "a cluster without host or port");
    VA_FUZZ_CHECK(!(c.exec && (!c.token.empty() || !c.token_file.empty())),
                  "an exec plugin together with a token");
  } catch (const va::ConfigError& e) {
    VA_FUZZ_CHECK(!e.problems().empty(), "a ConfigError with no problem in it");
  }
  return 0;
}
