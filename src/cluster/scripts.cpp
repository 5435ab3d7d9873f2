// The Lua scripts of scripts.h. They share their prelude (the clock and the window helpers).
#include "cluster/scripts.h"

#include <string>
#include <string_view>

namespace switchboard::cluster::scripts {
namespace {

// Shared by every script: `now` in ms from Redis' own clock, and the bucketed window helpers.
constexpr const char* kPrelude = R"lua(
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local MW, MS = 100, 600
local DW, DS = 60000, 1440
local KEEP = 172800000
local MAXCD = 4096
-- Moves a bucketed window's head to now, expiring the buckets that left it. Returns the head.
local function advance(h, width, span)
  local cur = math.floor(now / width)
  local head = tonumber(redis.call('HGET', h, 'h'))
  if head == nil or cur - head > span then
    redis.call('DEL', h)
    redis.call('HSET', h, 'h', cur, 'r', 0, 't', 0)
  elseif cur > head then
    local dr, dt = 0, 0
    for b = head + 1, cur do
      local old = b - span - 1
      local v = redis.call('HMGET', h, 'r' .. old, 't' .. old)
      if v[1] then
        dr = dr + tonumber(v[1])
        dt = dt + tonumber(v[2] or 0)
        redis.call('HDEL', h, 'r' .. old, 't' .. old)
      end
    end
    if dr ~= 0 then redis.call('HINCRBY', h, 'r', -dr) end
    if dt ~= 0 then redis.call('HINCRBY', h, 't', -dt) end
    redis.call('HSET', h, 'h', cur)
  else
    cur = head
  end
  return cur
end
-- The fixed day that started at `hour` UTC (ms since the epoch / day). Resets the hash on a new day.
local function today(h, hour)
  local day = math.floor((now - hour * 3600000) / 86400000)
  local d = tonumber(redis.call('HGET', h, 'd'))
  if d ~= day then
    redis.call('DEL', h)
    redis.call('HSET', h, 'd', day, 'r', 0, 't', 0)
  end
  return day
end
)lua";

constexpr const char* kAdmitBody = R"lua(
local prefix, token, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local maxc, rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local rpd, tpd, hour = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local est, model = tonumber(ARGV[9]), ARGV[10]

-- When (ms from now) a bucketed window first has room for one more request of `est` tokens:
-- its oldest buckets leave it one by one. -1 when even an empty window is too small.
local function earliest(h, width, span, lr, lt)
  if lt > 0 and est > lt then return -1 end
  local v = redis.call('HMGET', h, 'r', 't')
  local needr = 0
  local needt = 0
  if lr > 0 then needr = tonumber(v[1]) + 1 - lr end
  if lt > 0 then needt = tonumber(v[2]) + est - lt end
  local all = redis.call('HGETALL', h)
  local rb, tb, order = {}, {}, {}
  for i = 1, #all, 2 do
    local f = all[i]
    if #f > 1 then
      local b = tonumber(string.sub(f, 2))
      local kind = string.sub(f, 1, 1)
      if b ~= nil and (kind == 'r' or kind == 't') then
        if rb[b] == nil then
          rb[b] = 0
          tb[b] = 0
          order[#order + 1] = b
        end
        if kind == 'r' then rb[b] = tonumber(all[i + 1]) else tb[b] = tonumber(all[i + 1]) end
      end
    end
  end
  table.sort(order)
  local fr, ft = 0, 0
  for _, b in ipairs(order) do
    fr = fr + rb[b]
    ft = ft + tb[b]
    if fr >= needr and ft >= needt then return (b + span + 1) * width - now end
  end
  return (math.floor(now / width) + span + 1) * width - now
end

-- One more request of `est` tokens would not fit the window's counts.
local function over(h, lr, lt)
  local v = redis.call('HMGET', h, 'r', 't')
  return (lr > 0 and tonumber(v[1]) + 1 > lr) or (lt > 0 and tonumber(v[2]) + est > lt)
end

-- Advances a bucketed window and checks it: its head, and when it is full the time it has room
-- again (ms since the epoch; -1 when never).
local function check_buckets(h, width, span, lr, lt)
  local ref = advance(h, width, span)
  if not over(h, lr, lt) then return ref, nil end
  local e = earliest(h, width, span, lr, lt)
  if e < 0 then return ref, -1 end
  return ref, now + e
end

-- Counts the reservation: in bucket `ref` too for a bucketed window.
local function add(h, ref, buckets)
  if buckets then
    redis.call('HINCRBY', h, 'r' .. ref, 1)
    redis.call('HINCRBY', h, 't' .. ref, est)
  end
  redis.call('HINCRBY', h, 'r', 1)
  redis.call('HINCRBY', h, 't', est)
  redis.call('PEXPIRE', h, KEEP)
end

local best_at, best_why, too_large = nil, 6, false
for i = 11, #ARGV do
  local key = ARGV[i]
  local base = prefix .. ':' .. key
  if redis.call('EXISTS', base .. ':off') == 0 then
    local at, why, never = now, 0, false
    local cd = redis.call('HMGET', base .. ':cd', '*', 'm:' .. model)
    for j = 1, 2 do
      if cd[j] then
        local u = tonumber(cd[j])
        if u > now and u > at then
          at = u
          why = 2
        end
      end
    end
    local leases = base .. ':l'
    if why == 0 and maxc > 0 then
      redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
      if redis.call('ZCARD', leases) >= maxc then
        why = 1
        local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
        at = tonumber(first[2])
      end
    end
    local mref, dref = 0, 0
    local blocked
    if why == 0 and (rpm > 0 or tpm > 0) then
      mref, blocked = check_buckets(base .. ':m', MW, MS, rpm, tpm)
      if blocked then why = 3 end
    end
    if why == 0 and (rpd > 0 or tpd > 0) then
      local h = base .. ':d'
      if hour < 0 then
        dref, blocked = check_buckets(h, DW, DS, rpd, tpd)
      else
        dref = today(h, hour)
        if tpd > 0 and est > tpd then
          blocked = -1
        elseif over(h, rpd, tpd) then
          blocked = (dref + 1) * 86400000 + hour * 3600000
        end
      end
      if blocked then why = 4 end
    end
    if blocked then
      if blocked < 0 then never = true else at = blocked end
    end
    if why == 0 then
      if maxc > 0 then redis.call('ZADD', leases, now + ttl, token) end
      if rpm > 0 or tpm > 0 then add(base .. ':m', mref, true) end
      if rpd > 0 or tpd > 0 then add(base .. ':d', dref, hour < 0) end
      return {1, key, mref, dref}
    end
    if never then
      too_large = true
    elseif best_at == nil or at < best_at then
      best_at = at
      best_why = why
    end
  end
end
if best_at == nil then
  if too_large then return {0, 5, -1} end
  return {0, 6, -1}
end
return {0, best_why, best_at - now}
)lua";

constexpr const char* kSettleBody = R"lua(
local base = KEYS[1] .. ':' .. ARGV[1]
local token = ARGV[2]
local dreq = 0
if tonumber(ARGV[3]) == 0 then dreq = -1 end
local dtok = tonumber(ARGV[4])
local mref, dref, maxc = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local cd_ms, cd_model, hour = tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10])
local channel, provider = ARGV[11], ARGV[12]
local minute_limited, day_limited = tonumber(ARGV[13]) == 1, tonumber(ARGV[14]) == 1

local function adjust(h, ref, span, buckets)
  if dreq == 0 and dtok == 0 then return end
  if buckets then
    local head = tonumber(redis.call('HGET', h, 'h'))
    if head == nil or ref > head or ref < head - span then return end
    if dreq ~= 0 then redis.call('HINCRBY', h, 'r' .. ref, dreq) end
    if dtok ~= 0 then redis.call('HINCRBY', h, 't' .. ref, dtok) end
  else
    if tonumber(redis.call('HGET', h, 'd')) ~= ref then return end
  end
  if dreq ~= 0 then redis.call('HINCRBY', h, 'r', dreq) end
  if dtok ~= 0 then redis.call('HINCRBY', h, 't', dtok) end
end

local leases = base .. ':l'
local removed = redis.call('ZREM', leases, token)
if minute_limited then adjust(base .. ':m', mref, MS, true) end
if day_limited then adjust(base .. ':d', dref, DS, hour < 0) end
if cd_ms >= 0 then
  local h = base .. ':cd'
  local field = '*'
  if cd_model ~= '' then field = 'm:' .. cd_model end
  -- Model names may come from clients (provider/anything): the hash is bounded. At the bound the
  -- cooldowns that ended go (a scan at most once a second: a flood of new names costs no more);
  -- if none did, this one stays the gateway's own (never key-wide).
  if field ~= '*' and redis.call('HEXISTS', h, field) == 0 and redis.call('HLEN', h) >= MAXCD then
    if redis.call('SET', base .. ':cdp', '1', 'NX', 'PX', 1000) then
      local all = redis.call('HGETALL', h)
      for i = 1, #all, 2 do
        if tonumber(all[i + 1]) <= now then redis.call('HDEL', h, all[i]) end
      end
    end
    if redis.call('HLEN', h) >= MAXCD then field = nil end
  end
  local untill = now + cd_ms
  local old = nil
  if field then old = tonumber(redis.call('HGET', h, field)) end
  if field and (old == nil or old < untill) then redis.call('HSET', h, field, untill) end
  local keep = KEEP
  if cd_ms + 60000 > keep then keep = cd_ms + 60000 end
  if redis.call('PTTL', h) < keep then redis.call('PEXPIRE', h, keep) end
end
if removed == 1 and maxc > 0 and redis.call('ZCARD', leases) + 1 >= maxc then
  redis.call('PUBLISH', channel, provider)
end
return removed
)lua";

constexpr const char* kRenewBody = R"lua(
local ttl = tonumber(ARGV[1])
local held = 0
for i = 2, #ARGV - 1, 2 do
  held = held + redis.call('ZADD', ARGV[i], 'XX', 'CH', now + ttl, ARGV[i + 1])
end
return held
)lua";

constexpr const char* kBudgetAdmitBody = R"lua(
local base, token, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local est, budget, seed = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local unsynced = tonumber(ARGV[6])
-- This UTC month (year * 12 + month - 1) from Redis' clock: days to a civil date, the
-- proleptic Gregorian calendar in eras of 400 years.
local z = math.floor(now / 86400000) + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
  - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local y, m = yoe + era * 400, mp + 3
if mp >= 10 then m = mp - 9 end
if m <= 2 then y = y + 1 end
local month = y * 12 + m - 1

local l, a = base .. ':l', base .. ':a'
local mo = tonumber(redis.call('HGET', base, 'mo'))
if mo == nil then
  -- First use, or Redis lost it: start from what the asking gateway knows was spent (which
  -- includes what it could not report).
  redis.call('HSET', base, 'mo', month, 's', seed)
elseif mo < month then
  redis.call('HSET', base, 'mo', month, 's', 0)
elseif unsynced > 0 then
  -- Spent through this gateway while Redis could not be told (its local share, a lost settle).
  redis.call('HINCRBY', base, 's', unsynced)
end
local gone = redis.call('ZRANGEBYSCORE', l, '-inf', now)
for _, t in ipairs(gone) do redis.call('HDEL', a, t) end
redis.call('ZREMRANGEBYSCORE', l, '-inf', now)
local spend = tonumber(redis.call('HGET', base, 's'))
local held = 0
for _, v in ipairs(redis.call('HVALS', a)) do held = held + tonumber(v) end
if spend >= budget then return {0, spend, held} end
if spend + held + est > budget then return {2, spend, held} end
redis.call('ZADD', l, now + ttl, token)
redis.call('HSET', a, token, est)
for _, k in ipairs({base, l, a}) do redis.call('PEXPIRE', k, 3456000000) end
return {1, spend, held}
)lua";

constexpr const char* kBudgetSettleBody = R"lua(
local base, token, cost = KEYS[1], ARGV[1], tonumber(ARGV[2])
local removed = redis.call('ZREM', base .. ':l', token)
redis.call('HDEL', base .. ':a', token)
if cost > 0 and redis.call('EXISTS', base) == 1 then redis.call('HINCRBY', base, 's', cost) end
return removed
)lua";

// Each key is one provider's quota period; 7 arguments per key: ttl_ms, then the deltas and the
// base (requests, tokens, nano-USD). A period Redis does not hold yet starts from the base.
constexpr const char* kQuotaShareBody = R"lua(
local out = {}
for i = 1, #KEYS do
  local a, k = (i - 1) * 7, KEYS[i]
  if redis.call('EXISTS', k) == 0 then
    redis.call('HSET', k, 'r', ARGV[a + 5], 't', ARGV[a + 6], 'n', ARGV[a + 7])
  end
  out[#out + 1] = redis.call('HINCRBY', k, 'r', ARGV[a + 2])
  out[#out + 1] = redis.call('HINCRBY', k, 't', ARGV[a + 3])
  out[#out + 1] = redis.call('HINCRBY', k, 'n', ARGV[a + 4])
  redis.call('PEXPIRE', k, ARGV[a + 1])
end
return out
)lua";

// Out of line: GCC 12 inlines operator+ into a spurious -Warray-bounds over the literals.
[[gnu::noinline]] std::string with_prelude(std::string_view body) {
  std::string text(kPrelude);
  text.append(body.data(), body.size());
  return text;
}

}  // namespace

const std::string& admit() {
  static const std::string text = with_prelude(kAdmitBody);
  return text;
}
const std::string& settle() {
  static const std::string text = with_prelude(kSettleBody);
  return text;
}
const std::string& renew() {
  static const std::string text = with_prelude(kRenewBody);
  return text;
}

const std::string& budget_admit() {
  static const std::string text = with_prelude(kBudgetAdmitBody);
  return text;
}
const std::string& budget_settle() {
  static const std::string text = with_prelude(kBudgetSettleBody);
  return text;
}

const std::string& quota_share() {
  static const std::string text = with_prelude(kQuotaShareBody);
  return text;
}

}  // namespace switchboard::cluster::scripts
