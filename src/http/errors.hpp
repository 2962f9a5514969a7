#pragma once
// OpenAI-shaped error responses (README.md, "Errors the client sees") and the one mapping from errc
// to HTTP status.
#include <string_view>

#include "core/errors.hpp"
#include "core/net.hpp"

namespace va::front {

using Response = http::response<http::string_body>;

unsigned status_for(errc e);

// {"error":{"message":…,"type":…,"param":null,"code":<status>}}; every 503 carries Retry-After.
Response error_response(unsigned status, std::string_view message, bool keep_alive,
                        unsigned version = 11);
Response error_response(const Failure& f, bool keep_alive, unsigned version = 11);

Response json_response(unsigned status, std::string body, bool keep_alive, unsigned version = 11);

}  // namespace va::front
