// `${...}` templates and `when` conditions.
#include <boost/json.hpp>
#include <cctype>

#include "workflow/template_util.h"
#include "workflow/workflow.h"

namespace switchboard::workflow {

namespace detail {

bool scan_templates(const std::string& text, std::vector<std::string>& exprs, std::string& err) {
  size_t i = 0;
  while ((i = text.find("${", i)) != std::string::npos) {
    if (i > 0 && text[i - 1] == '$') {  // `$${` escapes
      i += 2;
      continue;
    }
    size_t close = text.find('}', i + 2);
    if (close == std::string::npos) {
      err = "unclosed '${' in '" + text + "'";
      return false;
    }
    std::string e = text.substr(i + 2, close - i - 2);
    while (!e.empty() && std::isspace(static_cast<unsigned char>(e.back()))) e.pop_back();
    while (!e.empty() && std::isspace(static_cast<unsigned char>(e.front()))) e.erase(0, 1);
    if (e.empty()) {
      err = "empty '${}' in '" + text + "'";
      return false;
    }
    exprs.push_back(e);
    i = close + 1;
  }
  return true;
}

Result<std::vector<std::string>> split_path(const std::string& expr) {
  std::vector<std::string> out;
  std::string cur;
  auto bad = [&] { return Status::invalid_argument("'${" + expr + "}': malformed reference"); };
  for (size_t i = 0; i < expr.size(); ++i) {
    char c = expr[i];
    if (c == '.') {
      if (cur.empty() && (out.empty() || expr[i - 1] != ']')) return bad();
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else if (c == '[') {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
      size_t close = expr.find(']', i);
      if (close == std::string::npos || close == i + 1) return bad();
      std::string idx = expr.substr(i + 1, close - i - 1);
      for (char d : idx)
        if (!std::isdigit(static_cast<unsigned char>(d))) return bad();
      out.push_back(idx);
      i = close;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') {
      cur += c;
    } else {
      return bad();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  if (out.empty()) return bad();
  return out;
}

}  // namespace detail

namespace {

// Walks `parts[from..]` into `v`; nullopt when a key or index is missing.
std::optional<json::value> navigate(const json::value& v, const std::vector<std::string>& parts,
                                    size_t from) {
  const json::value* cur = &v;
  for (size_t i = from; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (cur->is_object()) {
      auto it = cur->as_object().find(p);
      if (it == cur->as_object().end()) return std::nullopt;
      cur = &it->value();
    } else if (cur->is_array()) {
      char* end = nullptr;
      unsigned long idx = std::strtoul(p.c_str(), &end, 10);
      if (p.empty() || *end != '\0' || idx >= cur->as_array().size()) return std::nullopt;
      cur = &cur->as_array()[idx];
    } else {
      return std::nullopt;
    }
  }
  return *cur;
}

// nullopt with `err` set on a malformed or unknown reference; nullopt with `err` empty when the
// reference is well-formed but the value is missing.
std::optional<json::value> resolve(const std::string& expr, const TemplateScope& scope,
                                   std::string& err) {
  auto parts = detail::split_path(expr);
  if (!parts.ok()) {
    err = parts.status().message();
    return std::nullopt;
  }
  const auto& p = *parts;
  const std::string& root = p[0];
  if (root == "input") {
    static const json::value kNull;
    return navigate(scope.input ? *scope.input : kNull, p, 1);
  }
  if (root == "item") {
    if (!scope.item) {
      err = "'${" + expr + "}': ${item} is only defined inside a for_each step";
      return std::nullopt;
    }
    return navigate(*scope.item, p, 1);
  }
  if (root == "attempt" && p.size() == 1) return json::value(scope.attempt);
  if (root == "run" && p.size() == 2 && p[1] == "id") return json::value(scope.run_id);
  if (root == "steps" && p.size() >= 3) {
    auto view = scope.step ? scope.step(p[1]) : std::nullopt;
    if (!view) return std::nullopt;
    if (p[2] == "output") return navigate(view->output, p, 3);
    if (p.size() == 3) {
      if (p[2] == "status") return json::value(view->status);
      if (p[2] == "error") return json::value(view->error);
      if (p[2] == "attempt") return json::value(view->attempt);
    }
  }
  err = "'${" + expr + "}': unknown reference";
  return std::nullopt;
}

Result<json::value> render_string(const std::string& s, const TemplateScope& scope,
                                  bool missing_is_null) {
  if (s.find("${") == std::string::npos) return json::value(s);
  std::vector<std::string> exprs;
  std::string err;
  if (!detail::scan_templates(s, exprs, err)) return Status::invalid_argument(err);
  auto lookup = [&](const std::string& e) -> Result<json::value> {
    std::string why;
    auto v = resolve(e, scope, why);
    if (v) return std::move(*v);
    if (!why.empty()) return Status::invalid_argument(why);
    if (missing_is_null) return json::value(nullptr);
    return Status::invalid_argument("'${" + e + "}': no such value");
  };
  // Whole-string template: keep the JSON type.
  if (exprs.size() == 1 && s.size() >= 3 && s.compare(0, 2, "${") == 0 && s.back() == '}' &&
      s.find("${", 2) == std::string::npos) {
    return lookup(exprs[0]);
  }
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, 3, "$${") == 0) {
      out += "${";
      i += 3;
      continue;
    }
    if (s.compare(i, 2, "${") == 0) {
      size_t close = s.find('}', i + 2);
      std::string e = s.substr(i + 2, close - i - 2);
      while (!e.empty() && std::isspace(static_cast<unsigned char>(e.back()))) e.pop_back();
      while (!e.empty() && std::isspace(static_cast<unsigned char>(e.front()))) e.erase(0, 1);
      auto v = lookup(e);
      if (!v.ok()) return v.status();
      if (v->is_string())
        out += std::string(v->as_string());
      else
        out += json::serialize(*v);
      i = close + 1;
      continue;
    }
    out += s[i++];
  }
  return json::value(out);
}

bool truthy(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return false;
    case json::kind::bool_:
      return v.as_bool();
    case json::kind::int64:
      return v.as_int64() != 0;
    case json::kind::uint64:
      return v.as_uint64() != 0;
    case json::kind::double_:
      return v.as_double() != 0;
    case json::kind::string:
      return !v.as_string().empty();
    case json::kind::array:
      return !v.as_array().empty();
    case json::kind::object:
      return !v.as_object().empty();
  }
  return false;
}

bool equal(const json::value& a, const json::value& b) {
  if (a.is_number() && b.is_number()) return a.to_number<double>() == b.to_number<double>();
  return a == b;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.erase(0, 1);
  return s;
}

Result<json::value> operand(const std::string& raw, const TemplateScope& scope) {
  std::string s = trim(raw);
  if (s.empty()) return Status::invalid_argument("empty operand in condition");
  if (s.size() >= 2 && (s.front() == '\'' || s.front() == '"') && s.back() == s.front()) {
    if (s.front() == '"') {
      boost::system::error_code ec;
      auto v = json::parse(s, ec);
      if (!ec) return v;
    }
    return json::value(s.substr(1, s.size() - 2));
  }
  if (s.find("${") != std::string::npos) return render_string(s, scope, /*missing_is_null=*/true);
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  if (!ec && !v.is_object() && !v.is_array()) return v;
  return json::value(s);  // a bare word
}

// The position of a top-level `==` / `!=` (outside quotes and `${}`), or npos.
size_t find_operator(const std::string& c) {
  char quote = 0;
  int depth = 0;
  for (size_t i = 0; i + 1 < c.size(); ++i) {
    char ch = c[i];
    if (quote) {
      if (ch == '\\')
        ++i;
      else if (ch == quote)
        quote = 0;
      continue;
    }
    if (ch == '"' || ch == '\'')
      quote = ch;
    else if (ch == '$' && c[i + 1] == '{')
      ++depth;
    else if (ch == '}' && depth > 0)
      --depth;
    else if (depth == 0 && (ch == '=' || ch == '!') && c[i + 1] == '=')
      return i;
  }
  return std::string::npos;
}

}  // namespace

Result<json::value> render(const json::value& v, const TemplateScope& scope) {
  switch (v.kind()) {
    case json::kind::string:
      return render_string(std::string(v.as_string()), scope, false);
    case json::kind::array: {
      json::array out;
      for (const auto& e : v.as_array()) {
        auto r = render(e, scope);
        if (!r.ok()) return r;
        out.push_back(std::move(*r));
      }
      return json::value(std::move(out));
    }
    case json::kind::object: {
      json::object out;
      for (const auto& kv : v.as_object()) {
        auto r = render(kv.value(), scope);
        if (!r.ok()) return r;
        out[kv.key()] = std::move(*r);
      }
      return json::value(std::move(out));
    }
    default:
      return v;
  }
}

Result<bool> evaluate_condition(const std::string& cond, const TemplateScope& scope) {
  size_t op = find_operator(cond);
  if (op == std::string::npos) {
    auto v = operand(cond, scope);
    if (!v.ok()) return v.status();
    return truthy(*v);
  }
  bool negate = cond[op] == '!';
  auto a = operand(cond.substr(0, op), scope);
  if (!a.ok()) return a.status();
  auto b = operand(cond.substr(op + 2), scope);
  if (!b.ok()) return b.status();
  return equal(*a, *b) != negate;
}

}  // namespace switchboard::workflow
