#include "common/batched_sink.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "common/log.h"
#include "test_support.h"

namespace switchboard::log {
namespace {

using namespace std::chrono_literals;

// A BatchedSink on a file, with a logger in front of it; the flusher's interval is an hour, so
// nothing is written unless a test causes it.
class BatchedSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd_, 0);
  }
  void TearDown() override {
    logger_.reset();
    sink_.reset();
    ::close(fd_);
  }
  void make(size_t max_shard_bytes = 1 << 20) {
    sink_ = std::make_shared<BatchedSink>(fd_, 1h, max_shard_bytes);
    sink_->set_pattern("%v");
    logger_ = std::make_shared<spdlog::logger>("t", sink_);
    logger_->set_level(spdlog::level::info);
  }
  std::string written() const {
    std::ifstream f(path_);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

  testsupport::TempDir dir_{"batched"};
  std::string path_ = dir_.file("log.txt");
  int fd_ = -1;
  std::shared_ptr<BatchedSink> sink_;
  std::shared_ptr<spdlog::logger> logger_;
};

TEST_F(BatchedSinkTest, InfoLinesWaitForTheBatchWarnGoesOutAtOnceWithThem) {
  make();
  logger_->info("first");
  logger_->info("second");
  EXPECT_EQ(written(), "");  // buffered: no write on the logging thread
  EXPECT_EQ(sink_->writes(), 0u);
  logger_->warn("trouble");
  EXPECT_EQ(written(), "first\nsecond\ntrouble\n");  // in order, in one write
  EXPECT_EQ(sink_->writes(), 1u);
}

TEST_F(BatchedSinkTest, EveryLineOfEveryThreadArrivesOnceAndInItsThreadsOrder) {
  make();
  constexpr int kThreads = 4, kLines = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kLines; ++i) {
        logger_->info("t{} {}", t, i);
        if (i % 500 == 0) sink_->flush();  // the flusher's work, concurrently with logging
      }
    });
  for (auto& th : threads) th.join();
  sink_->flush();
  std::istringstream in(written());
  std::map<int, int> next;  // per thread, the line number expected next
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    int t = -1, i = -1;
    ASSERT_EQ(std::sscanf(line.c_str(), "t%d %d", &t, &i), 2) << "torn line: " << line;
    EXPECT_EQ(i, next[t]) << "thread " << t << " out of order";
    next[t] = i + 1;
    ++lines;
  }
  EXPECT_EQ(lines, kThreads * kLines);
  EXPECT_LT(sink_->writes(), uint64_t(kThreads * kLines / 10)) << "not batched";
}

TEST_F(BatchedSinkTest, AFullShardIsWrittenByItsThreadSoMemoryStaysBounded) {
  make(/*max_shard_bytes=*/64);
  for (int i = 0; i < 20; ++i) logger_->info("line number {}", i);
  // 20 lines of ~15 bytes over a 64-byte bound: written without any flush, a few at a time.
  const std::string text = written();
  EXPECT_NE(text.find("line number 0\n"), std::string::npos);
  EXPECT_GE(sink_->writes(), 3u);
}

TEST_F(BatchedSinkTest, DestructionWritesWhatIsBuffered) {
  make();
  logger_->info("last words");
  logger_.reset();
  sink_.reset();
  EXPECT_EQ(written(), "last words\n");
}

// The access log's own path: the record formatted once, straight into the batched line, in the
// same shape as the formatters give other sinks (text: timestamp, level, "access", the object;
// JSON: the record's fields at the top level), secrets redacted, and no write until the batch.
TEST_F(BatchedSinkTest, AccessRecordsAreFormattedOnceIntoTheBatch) {
  make();
  log::add_secret("sk-batched-secret-123", "openai#7");
  AccessRecord r;
  r.request_id = "req-9";
  r.route = "smart";
  r.model = "openai/sk-batched-secret-123\"x";
  r.provider = "openai";
  r.key = "openai#1";
  r.status = "ok";
  r.attempts = 1;
  r.latency_us = 250;
  r.tokens_in = 12;
  r.tokens_out = 9;
  r.cost_usd = 0.5;
  for (Format format : {Format::kText, Format::kJson}) {
    ASSERT_EQ(::ftruncate(fd_, 0), 0);
    ::lseek(fd_, 0, SEEK_SET);
    log::set_sink(sink_, format);
    const uint64_t writes = sink_->writes();
    log::access(r);
    EXPECT_EQ(sink_->writes(), writes);  // buffered: no write on the request's thread
    sink_->flush();
    const std::string line = written();
    ASSERT_FALSE(line.empty());
    EXPECT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find("sk-batched"), std::string::npos) << line;
    std::string_view object = line;
    if (format == Format::kText) {
      // 2026-12-06T01:02:03.123456Z info access {...}
      ASSERT_GT(line.size(), 41u);
      EXPECT_EQ(line[10], 'T');
      EXPECT_EQ(line.substr(26, 14), "Z info access ");
      object = std::string_view(line).substr(40);
    }
    boost::system::error_code ec;
    auto v = boost::json::parse(object, ec);
    ASSERT_FALSE(ec) << line;
    const auto& o = v.as_object();
    EXPECT_EQ(o.at("request_id").as_string(), "req-9");
    EXPECT_EQ(o.at("model").as_string(), "openai/[openai#7]\"x");
    EXPECT_FALSE(o.contains("client"));
    EXPECT_EQ(o.at("latency_us").as_int64(), 250);
    EXPECT_EQ(o.at("tokens_out").as_int64(), 9);
    EXPECT_NEAR(o.at("cost_usd").to_number<double>(), 0.5, 1e-12);
    if (format == Format::kJson) {
      EXPECT_EQ(o.at("msg").as_string(), "access");
      EXPECT_EQ(o.at("logger").as_string(), "access");
      EXPECT_EQ(o.at("level").as_string(), "info");
      EXPECT_EQ(o.at("ts").as_string().size(), 27u);
    }
  }
  log::clear_secrets();
  log::init("info", Format::kText);  // the process-wide logger back on stderr
}

}  // namespace
}  // namespace switchboard::log
