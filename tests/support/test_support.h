// Test support shared by every suite: temporary directories, direct SQLite reads, bounded waits.
//
// One copy, so that helpers cannot drift apart between suites (they had: two query_int returned
// different values for a failed query). Module-specific helpers stay in tests/<module>/.
// Thread-safety: TempDir is one test's; the functions may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace switchboard::testsupport {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// A fresh directory under /tmp ("/tmp/switchboard-<tag>-XXXXXX"), removed with everything in it
// when the object goes. Aborts the test binary when the directory cannot be made.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs `sql` on a fresh read-write connection (busy timeout 5 s) and returns the first column of
// the first row as text: "" when there is no row, "ERROR: ..." when opening or the statement fails.
std::string query_text(const std::string& path, const std::string& sql);
// query_text as a number; -1 when there is no row, the value is NULL, or the query failed.
int64_t query_int(const std::string& path, const std::string& sql);

// Polls `done` (every millisecond at first, backing off to 10 ms) until it returns true or
// `timeout` passes; returns its last answer. For conditions another thread or process brings
// about where no notification exists (a file, a row, a counter); the timeout turns a hang into a
// failed assertion.
bool wait_until(const std::function<bool()>& done,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

// A private redis-server (the Debian package's binary) on a free loopback port, with no
// persistence, in its own temporary directory; stopped (SIGTERM, then SIGKILL) with the object.
// `kill()` and `start()` again (same port) simulate an outage. Aborts the test binary when
// redis-server is missing or does not come up.
class RedisServer {
 public:
  RedisServer();
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }
  void start();
  void kill();  // SIGKILL: connections drop, nothing is flushed
  bool running() const { return pid_ > 0; }
  // redis-cli's answer to `args` (its stdout, trailing newline removed).
  std::string cli(const std::string& args) const;

 private:
  TempDir dir_{"redis"};
  int port_ = 0;
  int pid_ = -1;
};

// A private PostgreSQL 15 server for one test: initdb in its own temporary directory (as the
// unprivileged user `nobody` when the test runs as root, which PostgreSQL refuses), listening on
// a free loopback port, fsync off (a test loses nothing to a process kill without it). Stopped
// and removed with the object. Aborts the test binary when it does not come up.
class PostgresServer {
 public:
  PostgresServer();
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  int port() const { return port_; }
  // postgresql://postgres@127.0.0.1:<port>/postgres (trust authentication on loopback).
  std::string url() const;
  // kill() (SIGKILL: connections drop; committed data survives, as after a crash) and start()
  // again on the same port and data simulate an outage.
  void kill();
  void start();
  // psql's unaligned answer to `sql` (stdout, trailing newline removed; "ERROR..." on failure).
  std::string psql(const std::string& sql) const;

 private:
  TempDir dir_{"postgres"};
  int port_ = 0;
  int pid_ = -1;
};

// A TCP port on 127.0.0.1 that nothing listened on a moment ago, never the same one twice in a
// process.
int free_port();

}  // namespace switchboard::testsupport
