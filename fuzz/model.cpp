// Fuzz target: finding a request's `model` (JSON bodies and multipart forms). The input's first
// line is the Content-Type, the rest the body. A JSON body that extract_model() accepts must be
// JSON to boost::json::parse too, and the model it finds must be the document's top-level "model".
#include <boost/json.hpp>
#include <cstdint>
#include <string_view>

#include "fuzz/check.hpp"
#include "http/request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto eol = input.find('\n');
  const auto content_type = input.substr(0, eol);
  const auto body = eol == std::string_view::npos ? std::string_view() : input.substr(eol + 1);
  const auto model = va::front::extract_model(content_type, body);
  if (content_type.starts_with("multipart/form-data")) {
    return 0;
  }
  const auto first = body.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || body[first] != '{') {
    VA_FUZZ_CHECK(model && !model->has_value(), "a model from a body that is not a JSON object");
    return 0;
  }
  boost::system::error_code ec;
  const auto doc = boost::json::parse(body, ec);
  if (ec) {
    VA_FUZZ_CHECK(!model, "extract_model accepted what boost::json refuses");
    return 0;
  }
  const auto* field = doc.as_object().if_contains("model");
  if (field == nullptr || field->is_null()) {
    VA_FUZZ_CHECK(model && !model->has_value(), "no model expected");
  } else if (field->is_string()) {
    VA_FUZZ_CHECK(model && model->has_value() && **model == std::string_view(field->get_string()),
                  "not the document's model");
  } else {
    VA_FUZZ_CHECK(!model, "a model that is not a string was accepted");
  }
  return 0;
}
