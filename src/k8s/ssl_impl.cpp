// Asio's SSL implementation, compiled once (BOOST_ASIO_SEPARATE_COMPILATION; core/boost_impl.cpp
// compiles the rest of Asio but not SSL, which only this library needs).
#include <boost/asio/ssl/impl/src.hpp>
