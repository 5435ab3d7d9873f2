// Socket writes and reads that skip the event loop when they can complete at once.
//
// A small write to a connected TCP socket nearly always fits its send buffer, and a small body
// nearly always arrives with its header. Asio still routes even an immediate completion through
// the scheduler (a queued handler and a coroutine resumption per operation), which a proxied
// request paid several times over. These helpers try the direct, non-blocking call first and fall
// back to the asynchronous operation only for what is left.
//
// Plain TCP only (a TLS stream must not be written around). Internal to the net module;
// includes Asio. Thread-safety: that of the socket (one thread).
#pragma once

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <utility>

namespace switchboard::net {

struct NoTimeout {
  void operator()() const {}
};

// Writes all of `buffers` to `stream`, whose lowest layer is `socket` (plain TCP): directly
// while the socket takes the bytes, then asynchronously, calling `before_wait()` first (where
// the caller arms the stream's timeout: a write that completes at once needs none). Returns the
// error (if any) and the number of bytes written.
template <typename AsyncWriteStream, size_t N, typename BeforeWait = NoTimeout>
boost::asio::awaitable<std::pair<boost::system::error_code, size_t>> write_all(
    AsyncWriteStream& stream, boost::asio::ip::tcp::socket& socket,
    std::array<boost::asio::const_buffer, N> buffers, BeforeWait before_wait = {}) {
  namespace asio = boost::asio;
  size_t total = 0;
  for (const auto& b : buffers) total += b.size();
  boost::system::error_code ec;
  if (!socket.non_blocking()) socket.non_blocking(true, ec);
  size_t written = ec ? 0 : socket.write_some(buffers, ec);
  if (!ec && written == total) co_return std::pair{ec, written};
  if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
    co_return std::pair{ec, written};
  }
  // Drop what went out already, then let the event loop finish.
  size_t skip = written;
  for (auto& b : buffers) {
    const size_t n = std::min(skip, b.size());
    b += n;
    skip -= n;
  }
  before_wait();
  auto [aec, n] = co_await asio::async_write(stream, buffers, asio::as_tuple(asio::use_awaitable));
  co_return std::pair{aec, written + n};
}

}  // namespace switchboard::net
