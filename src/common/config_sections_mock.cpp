// ConfigReader (config_reader.h): mock provider scenarios, both a provider's `mock:` block and a
// scenario file of its own (`mock-provider --scenario`).
#include "common/config_reader.h"

namespace switchboard::config_detail {

void ConfigReader::read_mock(const YAML::Node& n, const std::string& p, MockScenario& m) {
  if (!n.IsDefined() || n.IsNull()) return;
  if (!check_map(n, p,
                 {"latency_ms", "chunks", "chunk_delay_ms", "rpm", "max_concurrent", "error_rate",
                  "error_status", "timeout_rate", "drop_mid_stream_rate", "completion_tokens",
                  "script", "invalid_keys", "quality", "model_latency_ms", "seed"}))
    return;
  read_int(n, "latency_ms", p, m.latency_ms, 0, 3600000);
  read_int(n, "chunks", p, m.chunks, 1, 100000);
  read_int(n, "chunk_delay_ms", p, m.chunk_delay_ms, 0, 3600000);
  read_int(n, "rpm", p, m.rpm, 0);
  read_int(n, "max_concurrent", p, m.max_concurrent, 0);
  read_double(n, "error_rate", p, m.error_rate, 0.0, 1.0);
  read_int(n, "error_status", p, m.error_status, 100, 599);
  read_double(n, "timeout_rate", p, m.timeout_rate, 0.0, 1.0);
  read_double(n, "drop_mid_stream_rate", p, m.drop_mid_stream_rate, 0.0, 1.0);
  read_int(n, "completion_tokens", p, m.completion_tokens, 1, 1000000);
  int64_t seed = int64_t(m.seed);
  read_int(n, "seed", p, seed, 0);
  m.seed = uint64_t(seed);
  if (present(n, "script")) {
    YAML::Node s = n["script"];
    if (!s.IsSequence()) {
      error(s, p + ".script", "expected a list of steps");
    } else {
      for (size_t i = 0; i < s.size(); ++i) {
        std::string sp = p + ".script[" + std::to_string(i) + "]";
        if (!check_map(s[i], sp, {"status", "times", "drop_mid_stream", "hang", "retry_after_ms"}))
          continue;
        MockScriptStep step;
        read_int(s[i], "status", sp, step.status, 100, 599);
        read_int(s[i], "times", sp, step.times, 1, 1000000);
        read_bool(s[i], "drop_mid_stream", sp, step.drop_mid_stream);
        read_bool(s[i], "hang", sp, step.hang);
        read_int(s[i], "retry_after_ms", sp, step.retry_after_ms, 0);
        m.script.push_back(step);
      }
    }
  }
  if (present(n, "invalid_keys")) {
    YAML::Node k = n["invalid_keys"];
    if (!k.IsSequence())
      error(k, p + ".invalid_keys", "expected a list of keys");
    else
      for (size_t i = 0; i < k.size(); ++i)
        if (k[i].IsScalar()) m.invalid_keys.push_back(k[i].Scalar());
  }
  if (present(n, "quality")) {
    YAML::Node q = n["quality"];
    if (!q.IsMap()) {
      error(q, p + ".quality", "expected model: { category: probability }");
    } else {
      for (auto it = q.begin(); it != q.end(); ++it) {
        std::string model = it->first.as<std::string>("");
        std::string qp = p + ".quality." + model;
        if (!it->second.IsMap()) {
          error(it->second, qp, "expected category: probability");
          continue;
        }
        for (auto ct = it->second.begin(); ct != it->second.end(); ++ct) {
          std::string cat = ct->first.as<std::string>("");
          double v = 0;
          if (!ct->second.IsScalar() || !YAML::convert<double>::decode(ct->second, v) || v < 0 ||
              v > 1) {
            error(ct->second, qp + "." + cat, "expected a probability between 0 and 1");
            continue;
          }
          m.quality[model][cat] = v;
        }
      }
    }
  }
  if (present(n, "model_latency_ms")) {
    YAML::Node ml = n["model_latency_ms"];
    if (!ml.IsMap()) {
      error(ml, p + ".model_latency_ms", "expected model: milliseconds");
    } else {
      for (auto it = ml.begin(); it != ml.end(); ++it) {
        int64_t v = 0;
        std::string model = it->first.as<std::string>("");
        if (!YAML::convert<int64_t>::decode(it->second, v) || v < 0)
          error(it->second, p + ".model_latency_ms." + model, "expected milliseconds >= 0");
        else
          m.model_latency_ms[model] = v;
      }
    }
  }
}

MockScenarioLoad ConfigReader::load_mock(const std::string& text) {
  MockScenarioLoad out;
  YAML::Node root;
  try {
    root = YAML::Load(text);
    if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
    MockScenario m;
    read_mock(root, "", m);
    out.scenario = m;
  } catch (const YAML::Exception& e) {
    ConfigError err;
    err.source = source_;
    err.line = e.mark.line + 1;
    err.column = e.mark.column + 1;
    err.message = "YAML: " + e.msg;
    errors_.push_back(err);
  }
  out.errors = std::move(errors_);
  if (!out.errors.empty()) out.scenario.reset();
  return out;
}

}  // namespace switchboard::config_detail
