// Helpers shared by the store tests (the common ones come from tests/support).
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>

#include "store/store.h"
#include "test_support.h"

namespace switchboard::store::storetest {

using testsupport::kSanitized;
using testsupport::query_int;
using testsupport::query_text;

// Store tests' scratch directories are named after them.
class TempDir : public testsupport::TempDir {
 public:
  TempDir() : testsupport::TempDir("store") {}
};

inline OutcomeEvent make_outcome(const std::string& model, WallTime t, int64_t latency_us = 1000,
                                 const char* status = kStatusOk) {
  OutcomeEvent o;
  o.time = t;
  o.request_id = "req-1";
  o.route = "auto";
  o.model = model;
  o.provider = "openai";
  o.key_id = "openai#1";
  o.status_class = status;
  o.latency_us = latency_us;
  o.tokens_in = 100;
  o.tokens_out = 20;
  o.cost_usd = 0.001;
  return o;
}

inline StoredResponseEvent make_response(std::string id, std::string owner, WallTime created,
                                         WallTime expires, std::string items) {
  StoredResponseEvent r;
  r.id = std::move(id);
  r.owner = std::move(owner);
  r.created = created;
  r.expires = expires;
  r.items = std::move(items);
  return r;
}

// The crash tests' children print how many outcomes they saw acknowledged, a line each time: the
// last complete line read from `fd` until it closes, as a number (0 when none).
inline uint64_t read_last_ack(int fd) {
  std::string data;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
  size_t end = data.rfind('\n');
  if (end == std::string::npos) return 0;
  size_t begin = data.rfind('\n', end - 1);
  begin = begin == std::string::npos ? 0 : begin + 1;
  return std::stoull(data.substr(begin, end - begin));
}

// One round of a crash test: runs the crash child (`child`) on `target`, lets it write for
// `kill_after` (counted from its first acknowledgement when `after_first_ack`, so that steady
// writing is covered however slowly it starts; else from its start, open and migrations
// included), and kill -9s it. Returns how many outcomes it saw acknowledged, or nullopt with
// `*why` set when it did not die of that signal (it failed on its own).
inline std::optional<uint64_t> crash_round(const char* child, const std::string& target,
                                           bool after_first_ack,
                                           std::chrono::milliseconds kill_after, std::string* why) {
  int fds[2];
  if (::pipe(fds) != 0) {
    *why = "pipe failed";
    return std::nullopt;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execl(child, child, target.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    *why = "fork failed";
    return std::nullopt;
  }
  if (after_first_ack) {
    pollfd p{fds[0], POLLIN, 0};
    (void)::poll(&p, 1, 10000);  // the data stays in the pipe
  }
  std::this_thread::sleep_for(kill_after);
  ::kill(pid, SIGKILL);
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  const uint64_t acked = read_last_ack(fds[0]);
  ::close(fds[0]);
  if (!WIFSIGNALED(wstatus)) {
    *why = "child exited with " + std::to_string(WEXITSTATUS(wstatus));
    return std::nullopt;
  }
  return acked;
}

}  // namespace switchboard::store::storetest
