#include "test_support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace switchboard::testsupport {

TempDir::TempDir(const std::string& tag) {
  std::string tmpl = "/tmp/switchboard-" + tag + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string query_text(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    out = std::string("ERROR: open: ") + (db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return out;
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    out = std::string("ERROR: ") + sqlite3_errmsg(db);
  } else {
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(st, 0);
      out = t ? reinterpret_cast<const char*>(t) : "";
    } else if (rc != SQLITE_DONE) {
      out = std::string("ERROR: ") + sqlite3_errmsg(db);
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

int64_t query_int(const std::string& path, const std::string& sql) {
  const std::string t = query_text(path, sql);
  if (t.empty() || t.rfind("ERROR", 0) == 0) return -1;
  return std::stoll(t);
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return done();
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(10));
  }
  return true;
}

int free_port() {
  // Never the same port twice in one test binary: a port handed out a moment ago may not be
  // bound yet by the child it was meant for, and the kernel would offer it again.
  static std::mutex mu;
  static std::set<int> given;
  std::lock_guard lock(mu);
  for (;;) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      std::perror("free_port");
      std::abort();
    }
    ::close(fd);
    const int port = ntohs(addr.sin_port);
    if (given.insert(port).second) return port;
  }
}

namespace {
// Sends `sig` to a server the test started and reaps it, with SIGKILL after 5 s.
void stop_child(int pid, int sig) {
  if (pid <= 0) return;
  ::kill(pid, sig);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}
}  // namespace

RedisServer::RedisServer() : port_(free_port()) {
  start();
}

RedisServer::~RedisServer() {
  stop_child(pid_, SIGTERM);
}

void RedisServer::start() {
  if (pid_ > 0) return;
  const std::string port = std::to_string(port_);
  pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    std::abort();
  }
  if (pid == 0) {
    // Dies with the test, and holds none of its output pipes (ctest waits for those to close).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
      ::dup2(null_fd, 0);
      ::dup2(null_fd, 1);
      ::dup2(null_fd, 2);
    }
    if (::chdir(dir_.path().c_str()) != 0) _exit(127);
    ::execlp("redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
             "--logfile", (dir_.path() + "/redis.log").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  pid_ = pid;
  const bool up = wait_until([this] { return cli("PING") == "PONG"; }, std::chrono::seconds(10));
  if (!up) {
    std::fprintf(stderr, "redis-server did not come up on port %d (is it installed?)\n", port_);
    std::abort();
  }
}

void RedisServer::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string RedisServer::cli(const std::string& args) const {
  const std::string cmd =
      "redis-cli -h 127.0.0.1 -p " + std::to_string(port_) + " " + args + " 2>/dev/null";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// ---- PostgresServer

namespace {
constexpr uid_t kNobody = 65534;  // Debian's nobody / nogroup

std::string pg_bindir() {
  std::string out = "/usr/lib/postgresql/15/bin";
  if (FILE* p = ::popen("pg_config --bindir 2>/dev/null", "r")) {
    char buf[512];
    if (std::fgets(buf, sizeof(buf), p) != nullptr) {
      std::string got(buf);
      while (!got.empty() && (got.back() == '\n' || got.back() == '\r')) got.pop_back();
      if (std::filesystem::exists(got + "/initdb")) out = got;
    }
    ::pclose(p);
  }
  return out;
}

// Forks `argv` as an unprivileged child that dies with the test; output to `log`.
pid_t spawn_unprivileged(const std::vector<std::string>& argv, const std::string& log) {
  pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    std::abort();
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null_fd = ::open("/dev/null", O_RDONLY);
    int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    if (log_fd >= 0) {
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
    }
    if (::geteuid() == 0 && (::setgid(kNobody) != 0 || ::setuid(kNobody) != 0)) _exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}
}  // namespace

PostgresServer::PostgresServer() : port_(free_port()) {
  const std::string bin = pg_bindir();
  const std::string data = dir_.path() + "/data";
  const std::string log = dir_.path() + "/postgres.log";
  if (::geteuid() == 0) {
    // The server runs as nobody: its directory (and the way to it, /tmp) must be its own.
    if (::chown(dir_.path().c_str(), kNobody, kNobody) != 0) std::perror("chown");
  }
  pid_t init = spawn_unprivileged({bin + "/initdb", "-D", data, "-U", "postgres", "-A", "trust",
                                   "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"},
                                  log);
  int status = 0;
  ::waitpid(init, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "initdb failed (status %d); see %s\n", status, log.c_str());
    std::abort();
  }
  start();
}

void PostgresServer::start() {
  if (pid_ > 0) return;
  const std::string bin = pg_bindir();
  const std::string data = dir_.path() + "/data";
  const std::string log = dir_.path() + "/postgres.log";
  pid_ = spawn_unprivileged(
      {bin + "/postgres", "-D", data, "-p", std::to_string(port_), "-c",
       "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + dir_.path(), "-c",
       "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=50", "-c",
       "shared_buffers=16MB", "-c", "logging_collector=off"},
      log);
  const bool up = wait_until([this] { return psql("SELECT 1") == "1"; }, std::chrono::seconds(30));
  if (!up) {
    std::fprintf(stderr, "postgres did not come up on port %d; see %s\n", port_, log.c_str());
    std::abort();
  }
}

PostgresServer::~PostgresServer() {
  stop_child(pid_, SIGQUIT);  // immediate shutdown: the data is thrown away anyway
}

void PostgresServer::kill() {
  stop_child(pid_, SIGKILL);
  pid_ = -1;
}

std::string PostgresServer::url() const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/postgres";
}

std::string PostgresServer::psql(const std::string& sql) const {
  // The statement goes through a file: no shell quoting of test SQL.
  const std::string file = dir_.path() + "/query-" + std::to_string(::getpid()) + ".sql";
  {
    FILE* f = std::fopen(file.c_str(), "w");
    if (f == nullptr) return "ERROR: cannot write " + file;
    std::fputs(sql.c_str(), f);
    std::fclose(f);
  }
  const std::string cmd = "psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p " +
                          std::to_string(port_) + " -U postgres -d postgres -f " + file + " 2>&1";
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    ::pclose(p);
  }
  std::remove(file.c_str());
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (out.rfind("psql:", 0) == 0) out = "ERROR: " + out;
  return out;
}

}  // namespace switchboard::testsupport
