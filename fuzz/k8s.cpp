// Fuzz target: what the proxy reads from the Kubernetes API and from exec credential plugins. The
// input is one answer body, used as:
// - a watch stream, fed in pieces whose sizes come from the input itself: it must decode to the
//   same events as the whole stream fed at once (chunk boundaries fall anywhere);
// - an error answer (api_failure), with a status from the input;
// - an exec plugin's stdout in both API versions, and an RFC 3339 time;
// - base64: what decodes encodes back to the same text (when written canonically).
#include <boost/json.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/check.hpp"
#include "k8s/client.hpp"
#include "k8s/config.hpp"
#include "k8s/exec_credential.hpp"
#include "k8s/watch.hpp"

namespace {

using va::k8s::WatchDecoder;

// Appends to `out` a summary of every outcome next() gives, in order.
void drain(WatchDecoder& d, std::vector<std::string>& out) {
  while (auto e = d.next()) {
    if (*e) {
      const auto& ev = **e;
      out.push_back(std::string(va::k8s::to_string(ev.type)) + " " + ev.resource_version + " " +
                    std::to_string(ev.error_code) + " " + (va::k8s::is_expired(ev) ? "x" : "-"));
    } else {
      out.push_back("failure " + std::string(va::name(e->error().code)));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // Small line limit, so that over-long lines are met too.
  constexpr std::size_t kMaxLine = 512;
  std::vector<std::string> whole;
  WatchDecoder at_once(kMaxLine);
  at_once.feed(input);
  drain(at_once, whole);
  std::vector<std::string> pieces;
  WatchDecoder piecewise(kMaxLine);
  for (std::size_t i = 0, k = 0; i < input.size(); ++k) {
    const std::size_t n = std::min<std::size_t>(1 + data[k % size] % 64, input.size() - i);
    piecewise.feed(input.substr(i, n));
    drain(piecewise, pieces);
    i += n;
  }
  VA_FUZZ_CHECK(whole == pieces, "the events depend on where the stream was cut");
  VA_FUZZ_CHECK(at_once.has_partial_line() == piecewise.has_partial_line(),
                "the partial line depends on where the stream was cut");
  (void)va::k8s::parse_watch_event(input);

  va::k8s::Response r;
  r.status = size > 0 ? 400 + data[0] % 200 : 500;
  r.body = std::string(input);
  const auto f = va::k8s::api_failure(va::http::verb::patch, "/apis/apps/v1/x", r);
  VA_FUZZ_CHECK(f.message.starts_with("kubernetes API: PATCH /apis/apps/v1/x: "),
                "an API failure that does not say what failed");
  (void)va::k8s::is_expired_response(r);

  // A token the output carries (status.token), to be sure an error never quotes it.
  std::string token;
  boost::system::error_code ec;
  if (const auto doc = boost::json::parse(input, ec); !ec && doc.is_object()) {
    if (const auto* status = doc.as_object().if_contains("status"); status && status->is_object()) {
      if (const auto* t = status->as_object().if_contains("token"); t && t->is_string()) {
        token = t->get_string();
      }
    }
  }
  for (const auto* version :
       {"client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"}) {
    if (const auto c = va::k8s::parse_exec_credential(input, version, "plugin")) {
      VA_FUZZ_CHECK(!c->token.empty(), "an exec credential with no token");
    } else if (token.size() >= 8 && input.find(token) == input.rfind(token)) {
      // (A token that also appears elsewhere, as in the apiVersion, may be quoted from there.)
      VA_FUZZ_CHECK(c.error().message.find(token) == std::string::npos,
                    "an exec plugin's token quoted in an error");
    }
  }
  (void)va::k8s::parse_rfc3339(input);

  if (const auto decoded = va::k8s::base64_decode(input)) {
    const auto encoded = va::k8s::base64_encode(*decoded);
    VA_FUZZ_CHECK(va::k8s::base64_decode(encoded) == decoded, "base64 does not round-trip");
  }
  return 0;
}
