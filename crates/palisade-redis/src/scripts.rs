//! The steps Redis takes atomically for the fleet, as Lua scripts. Time is
//! Redis's own (`TIME`), so replicas' clocks never disagree about a quota.

use std::sync::LazyLock;

use redis::Script;

/// Leases from GCRA quotas: `KEYS` are the quotas' cells (each holds its
/// theoretical arrival time in µs since the epoch); `ARGV` holds, per
/// quota, its interval in µs per unit, its tolerance (burst × interval) in
/// µs, the units wanted and the fewest worth taking. Each quota grants
/// what it has up to the want, or nothing if that is below the fewest;
/// the reply is, per quota, the units granted and, when none, the µs until
/// the fewest would fit.
pub(crate) static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 4
  local interval = tonumber(ARGV[base + 1])
  local tolerance = tonumber(ARGV[base + 2])
  local want = tonumber(ARGV[base + 3])
  local fewest = tonumber(ARGV[base + 4])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local room = math.floor((now + tolerance - tat) / interval)
  local grant = want
  if room < grant then grant = room end
  if want <= 0 then
    out[#out + 1] = 0
    out[#out + 1] = 0
  elseif grant < fewest or grant <= 0 then
    out[#out + 1] = 0
    out[#out + 1] = math.ceil(tat + fewest * interval - tolerance - now)
  else
    tat = tat + grant * interval
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
    out[#out + 1] = grant
    out[#out + 1] = 0
  end
end
return out
"#,
    )
});

/// Gives units back to GCRA quotas (a replica leaving with some unspent):
/// `KEYS` the cells, `ARGV` per quota the µs to take off its arrival time,
/// never below now.
pub(crate) static RETURN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '0')
  local back = tonumber(ARGV[i])
  if tat > now and back > 0 then
    tat = tat - back
    if tat < now then tat = now end
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  end
end
return 1
"#,
    )
});

/// Counts this replica alive (`KEYS[1]` the sorted set of replicas,
/// `ARGV[1]` its name, `ARGV[2]` how long silence is allowed, in ms) and
/// answers how many are.
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
"#,
    )
});

/// Deletes `KEYS[1]` only if it still holds `ARGV[1]` (a lock this replica
/// took, not one taken since by another).
pub(crate) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// Takes a probe lock: `KEYS[1]` set to `ARGV[1]` (this replica) for
/// `ARGV[2]` ms if nobody holds it; -1 if taken, otherwise the ms the
/// holder still has.
pub(crate) static PROBE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  return -1
end
return redis.call('PTTL', KEYS[1])
"#,
    )
});

/// A fleet's retry budget: `KEYS[1]` the requests and `KEYS[2]` the retries
/// per second (hashes by Unix second); `ARGV`: this replica's requests
/// since it last reported, the ratio, the retries always allowed in a
/// window (min per second × ttl), the window in seconds, the retries
/// wanted. Reports the requests, forgets seconds older than the window, and
/// grants what the window allows up to the want.
pub(crate) static BUDGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[4])
local requests = tonumber(ARGV[1])
if requests > 0 then redis.call('HINCRBY', KEYS[1], now, requests) end
local function live(key)
  local sum = 0
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if tonumber(all[i]) <= now - ttl then
      redis.call('HDEL', key, all[i])
    else
      sum = sum + tonumber(all[i + 1])
    end
  end
  return sum
end
local allowed = math.floor(tonumber(ARGV[2]) * live(KEYS[1]) + tonumber(ARGV[3]) - live(KEYS[2]))
local grant = math.min(tonumber(ARGV[5]), math.max(0, allowed))
if grant > 0 then redis.call('HINCRBY', KEYS[2], now, grant) end
redis.call('PEXPIRE', KEYS[1], ttl * 1000 + 2000)
redis.call('PEXPIRE', KEYS[2], ttl * 1000 + 2000)
return grant
"#,
    )
});
