"""The Lua script every replica runs against Redis to report its breaker outcomes and read the shared state.

One script call per sync round carries all of a replica's breakers (``routing/shared_breaker.py``); the
script applies the breaker rules (consecutive failures, error rate over the window, the one-tenant rule)
atomically, so replicas never race on a transition. Kept apart from the Python side for its length.
"""

from __future__ import annotations

# ARGV[1] = replica id; then one argument per breaker (KEYS: hash, probes), its fields separated by
# spaces (one string is far cheaper for redis-py to send than a dozen arguments): consecutive_failures,
# error_rate, window_seconds, min_requests, open_seconds, half_open_probes, lease seconds, ok, fail,
# trailing failures, probe leases wanted, n results, n pairs (member, 1/0), n releases, n members,
# n tenants, n quadruples (tenant digest, calls, failures, failures in the trailing run).
# Returns per breaker: state, seconds until the open time is up, opened, reason, consec, window
# calls, window failures, probe successes, spared, n granted, n members.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local replica = ARGV[1]
local k = 1
local out = {}

local function clear_window(h)
  for _, f in ipairs(redis.call('HKEYS', h)) do
    local kind = string.sub(f, 1, 2)
    if kind == 'w:' or kind == 'u:' or kind == 'r:' or kind == 'uf' then redis.call('HDEL', h, f) end
  end
end

-- The tenant with the most failures in `counts` when two tenants or more used the breaker's
-- deployment in the window (`shared`); else nil.
local function top_tenant(shared, counts)
  if not shared then return nil end
  local top, most = nil, 0
  for t, c in pairs(counts) do
    if c > most then top, most = t, c end
  end
  return top
end

local function set_open(h, p, open_s, reason)
  redis.call('HSET', h, 'state', 'o', 'until', tostring(now + open_s), 'reason', reason, 'consec', 0, 'pok', 0)
  redis.call('HINCRBY', h, 'opened', 1)
  clear_window(h)
  redis.call('DEL', p)
end

for arg = 2, #ARGV do
  local h, p = KEYS[k], KEYS[k + 1]
  k = k + 2
  local f = {}
  for word in string.gmatch(ARGV[arg], '%S+') do f[#f + 1] = word end
  local threshold, rate, window = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  local min_req, open_s, needed, lease = tonumber(f[4]), tonumber(f[5]), tonumber(f[6]), tonumber(f[7])
  local ok, fail, trailing, want = tonumber(f[8]), tonumber(f[9]), tonumber(f[10]), tonumber(f[11])
  local nres = tonumber(f[12])
  local res_at = 13
  local nrel = tonumber(f[res_at + 2 * nres])
  local rel_at = res_at + 2 * nres + 1
  local nten = tonumber(f[rel_at + nrel])
  local ten_at = rel_at + nrel + 1

  -- A replica that has nothing to report for this breaker only reads it (the common, idle case).
  local busy = ok + fail + want + nres + nrel > 0
  if busy then
    redis.call('ZREMRANGEBYSCORE', p, '-inf', now)
    for i = 0, nrel - 1 do redis.call('ZREM', p, f[rel_at + i]) end
  end
  local cur = redis.call('HMGET', h, 'state', 'until')
  local state, opened_until = cur[1] or 'c', tonumber(cur[2] or '0')
  local calls, fails = -1, -1  -- the window's totals; -1: not read this time

  -- Probe results count only for a live lease of this half-open spell.
  for i = 0, nres - 1 do
    local member, good = f[res_at + 2 * i], f[res_at + 2 * i + 1] == '1'
    if redis.call('ZREM', p, member) == 1 and state == 'o' and now >= opened_until then
      if not good then
        set_open(h, p, open_s, 'a half-open probe failed')
        opened_until, calls, fails = now + open_s, 0, 0
      elseif redis.call('HINCRBY', h, 'pok', 1) >= needed then
        redis.call('HSET', h, 'state', 'c', 'consec', 0, 'pok', 0)
        clear_window(h)
        redis.call('DEL', p)
        state, calls, fails = 'c', 0, 0
      end
    end
  end

  -- Outcomes of ordinary calls count only while closed (calls in flight when it opened do not).
  if state == 'c' and ok + fail > 0 then
    calls, fails = 0, 0
    local bucket = math.floor(now / (window / __BUCKETS__))
    if ok > 0 then redis.call('HINCRBY', h, 'w:o:' .. bucket, ok) end
    if fail > 0 then redis.call('HINCRBY', h, 'w:f:' .. bucket, fail) end
    local consec = trailing
    if ok == 0 then consec = tonumber(redis.call('HGET', h, 'consec') or '0') + fail end
    redis.call('HSET', h, 'consec', consec)
    -- Who uses it, in O(1) fields: pt is the latest tenant, pb the bucket it was last seen in, and
    -- ob the last bucket in which another tenant was seen (the last call before the latest switch).
    local seen = redis.call('HMGET', h, 'pt', 'pb', 'ob')
    local pt, pb, ob = seen[1], tonumber(seen[2] or '0'), tonumber(seen[3] or '-1')
    for i = 0, nten - 1 do
      local at = ten_at + 4 * i
      local t, tc, tf = f[at], tonumber(f[at + 1]), tonumber(f[at + 2])
      if nten > 1 then
        ob = bucket
      elseif pt ~= nil and t ~= pt then
        ob = pb
      end
      pt, pb = t, bucket
      -- Calls and failures only for a tenant that failed within the window (uf:<t>: the last bucket
      -- it failed in), from the round of its first failure on: its calls leave the rate's denominator
      -- with its failures, and its successes are not taken for the others'. A tenant without
      -- failures is never the one removed.
      if tf > 0 then
        redis.call('HINCRBY', h, 'u:c:' .. bucket .. ':' .. t, tc)
        redis.call('HINCRBY', h, 'u:f:' .. bucket .. ':' .. t, tf)
        redis.call('HSET', h, 'uf' .. t, bucket)
      elseif tonumber(redis.call('HGET', h, 'uf' .. t) or '-1e18') > bucket - __BUCKETS__ then
        redis.call('HINCRBY', h, 'u:c:' .. bucket .. ':' .. t, tc)
      end
    end
    if nten > 0 then redis.call('HSET', h, 'pt', pt, 'pb', pb, 'ob', ob) end
    local shared = ob > bucket - __BUCKETS__
    local t_calls, t_fails, t_runs = {}, {}, {}
    local flat = redis.call('HGETALL', h)
    for i = 1, #flat, 2 do
      local f = flat[i]
      local kind = string.sub(f, 1, 2)
      if kind == 'w:' then
        if tonumber(string.sub(f, 5)) <= bucket - __BUCKETS__ then
          redis.call('HDEL', h, f)
        else
          calls = calls + tonumber(flat[i + 1])
          if string.sub(f, 3, 3) == 'f' then fails = fails + tonumber(flat[i + 1]) end
        end
      elseif kind == 'u:' then
        local rest = string.sub(f, 5)
        local colon = string.find(rest, ':', 1, true)
        if tonumber(string.sub(rest, 1, colon - 1)) <= bucket - __BUCKETS__ then
          redis.call('HDEL', h, f)
        else
          local t, n = string.sub(rest, colon + 1), tonumber(flat[i + 1])
          if string.sub(f, 3, 3) == 'f' then
            t_fails[t] = (t_fails[t] or 0) + n
          else
            t_calls[t] = (t_calls[t] or 0) + n
          end
        end
      elseif kind == 'uf' then
        if tonumber(flat[i + 1]) <= bucket - __BUCKETS__ then redis.call('HDEL', h, f) end
      elseif kind == 'r:' then
        if ok > 0 then  -- a success ended the run: only this report's trailing failures are in it
          redis.call('HDEL', h, f)
        else
          t_runs[string.sub(f, 3)] = tonumber(flat[i + 1])
        end
      end
    end
    for i = 0, nten - 1 do
      local at = ten_at + 4 * i
      local t, tr = f[at], tonumber(f[at + 3])
      if tr > 0 then
        t_runs[t] = (t_runs[t] or 0) + tr
        redis.call('HSET', h, 'r:' .. t, t_runs[t])
      end
    end
    -- A rule met is held back only on evidence that the deployment works for the others (all but the
    -- top failing tenant): a success of theirs in the window, and the rule not met by them alone.
    local function works_for_others(top, rest_below)
      if not rest_below then return false end
      local top_ok = (t_calls[top] or 0) - (t_fails[top] or 0)
      return (calls - fails) - top_ok > 0
    end
    local reason, held = nil, false
    if fail > 0 and consec >= threshold then
      local top = top_tenant(shared, t_runs)
      if top == nil or not works_for_others(top, consec - t_runs[top] < threshold) then
        reason = consec .. ' consecutive failures'
      else
        held = true
      end
    end
    -- A consecutive rule held back still leaves the rate rule to be checked.
    if reason == nil and fail > 0 and calls >= min_req and fails / calls >= rate then
      local top = top_tenant(shared, t_fails)
      if top == nil then
        reason = fails .. ' of ' .. calls .. ' calls failed in ' .. math.floor(window + 0.5) .. 's'
      else
        local rest_calls, rest_fails = calls - (t_calls[top] or 0), fails - t_fails[top]
        if works_for_others(top, rest_fails < rate * rest_calls) then
          held = true
        else
          reason = fails .. ' of ' .. calls .. ' calls failed in ' .. math.floor(window + 0.5) .. 's'
        end
      end
    end
    if reason == nil and held then redis.call('HINCRBY', h, 'spared', 1) end
    if reason ~= nil then
      set_open(h, p, open_s, reason)
      state, opened_until, calls, fails = 'o', now + open_s, 0, 0
    end
  end

  local granted = {}
  if state == 'o' and now >= opened_until and want > 0 then
    local free = needed - tonumber(redis.call('HGET', h, 'pok') or '0') - redis.call('ZCARD', p)
    for _ = 1, math.min(want, free) do
      local member = replica .. ':' .. redis.call('HINCRBY', h, 'seq', 1)
      redis.call('ZADD', p, now + lease, member)
      granted[#granted + 1] = member
    end
    redis.call('EXPIRE', p, math.ceil(lease))
  end
  if busy then redis.call('EXPIRE', h, __TTL__) end

  out[#out + 1] = state
  out[#out + 1] = tostring(opened_until - now)
  local v = redis.call('HMGET', h, 'opened', 'reason', 'consec', 'pok', 'spared')
  out[#out + 1] = v[1] or '0'
  out[#out + 1] = v[2] or ''
  out[#out + 1] = v[3] or '0'
  out[#out + 1] = tostring(calls)
  out[#out + 1] = tostring(fails)
  out[#out + 1] = v[4] or '0'
  out[#out + 1] = v[5] or '0'
  out[#out + 1] = tostring(#granted)
  for _, member in ipairs(granted) do out[#out + 1] = member end
end
return out
"""


def breaker_script(buckets: int, ttl_seconds: int) -> str:
    """The script with the window's bucket count and the keys' time to live filled in."""
    return SCRIPT.replace("__BUCKETS__", str(buckets)).replace("__TTL__", str(ttl_seconds))
