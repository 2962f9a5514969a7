// The one translation unit that compiles Asio, Beast, Boost.JSON and Boost.URL (see
// CMakeLists.txt).
#include <boost/asio/impl/src.hpp>
#include <boost/beast/src.hpp>
#include <boost/json/src.hpp>
#include <boost/url/src.hpp>
