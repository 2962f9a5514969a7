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

  // The exec plugin's output, in both API versions.
  boost::system::error_code ec;
  auto doc = boost::json::parse(input, ec);
  for (const auto* version :
       {"client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"}) {
    if (const auto c = va::k8s::parse_exec_credential(input, version, "plugin")) {
      VA_FUZZ_CHECK(!c->token.empty(), "an exec credential with no token");
    }
  }
  // An error never quotes the token: where it holds the token, the same output with another token
  // must give an error that holds it too (then it is the rest of the output or our wording that
  // holds those characters, not status.token).
  auto* status = !ec && doc.is_object() ? doc.as_object().if_contains("status") : nullptr;
  auto* token =
      status != nullptr && status->is_object() ? status->as_object().if_contains("token") : nullptr;
  if (token != nullptr && token->is_string() && !token->get_string().empty()) {
    const std::string secret(token->get_string());
    const std::string with_secret = boost::json::serialize(doc);
    *token = std::string(secret.size(), secret[0] == '#' ? '%' : '#');
    const std::string with_other = boost::json::serialize(doc);
    for (const auto* version :
         {"client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"}) {
      const auto a = va::k8s::parse_exec_credential(with_secret, version, "plugin");
      const auto b = va::k8s::parse_exec_credential(with_other, version, "plugin");
      VA_FUZZ_CHECK(a.has_value() == b.has_value(),
                    "whether an exec credential is usable depends "
                    "on its token's characters");
      if (!a) {
        VA_FUZZ_CHECK(a.error().message.find(secret) == std::string::npos ||
                          b.error().message.find(secret) != std::string::npos,
                      "an exec plugin's token quoted in an error");
      }
    }
  }
  (void)va::k8s::parse_rfc3339(input);

  if (const auto decoded = va::k8s::base64_decode(input)) {
    const auto encoded = va::k8s::base64_encode(*decoded);
    VA_FUZZ_CHECK(va::k8s::base64_decode(encoded) == decoded, "base64 does not round-trip");
  }
  return 0;
}
