// The HTTP vocabulary of the gateway's handlers: the net module's server types, under the
// gateway's own names, plus the usual short namespace aliases. Internal to the gateway module
// (includes Beast).
#pragma once

#include "net/http_server.h"

namespace switchboard::gateway {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;

using net::append_header;
using net::error_response;
using net::Exchange;
using net::finish_chunks;
using net::Handler;
using net::HttpServer;
using net::json_response;
using net::Request;
using net::Response;
using net::split_host_port;
using net::write_chunk;
using net::write_stream_head;

}  // namespace switchboard::gateway
