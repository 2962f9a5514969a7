#pragma once
// Whether the proxy's own identity may make the requests a caller needs, asked of the API server
// with SelfSubjectAccessReviews (authorization.k8s.io/v1), which every authenticated identity may
// create (the system:basic-user ClusterRole). A bad Role is then found at start, by name and
// verb, instead of by the first user's request.
#include <string>
#include <vector>

#include "core/errors.hpp"
#include "core/net.hpp"
#include "k8s/client.hpp"

namespace va::k8s {

// One request the caller makes: `verb` on `resource` (and `subresource`) of API `group` ("" for
// the core group), in `namespace_`, on the object `name` (empty: any, as for a list of pods).
struct Access {
  std::string verb;
  std::string group;
  std::string resource;
  std::string subresource;
  std::string namespace_;
  std::string name;
};

// "patch apps/deployments/scale \"vllm\" in namespace \"llm\"".
std::string describe(const Access& a);

// The SelfSubjectAccessReview that asks for `a`, as JSON.
std::string access_review_body(const Access& a);

// The answer to one review: allowed, or a Failure when the answer says neither (not 201, or no
// status.allowed): the caller cannot tell, and reports nothing.
outcome<bool> access_allowed(const Response& r);

// Reviews each of `needs`: the ones denied, as "cannot <describe()>". A Failure when a review
// could not be made (transport, or an unexpected answer).
task<outcome<std::vector<std::string>>> denied(Client& client, const std::vector<Access>& needs);

}  // namespace va::k8s
