--[[
Push rate limits, atomically in Redis: the twin of models/limits.py. The rules, their
order and every comparison are the same there; read that module first. The time-zone
arithmetic (window start, quiet hours) is done in Python and arrives as arguments.

One script, four operations, chosen by ARGV[1]:

  check    KEYS: pushes, items, records, decided (one user's keys: one hash slot)
  take     KEYS: bucket (the global send budget)
  refund   KEYS: bucket
  publish  KEYS: records, decided

Times arrive as strings written by Python's repr(float), which tonumber() parses
exactly. They are stored from those strings or as Lua numbers (which Redis converts
with %.17g), never through tostring(), whose %.14g would round them. Every comparison
is "stored time against now - period", the same floating-point operations as Python.
]]

local function expire(key, seconds)
  redis.call('PEXPIRE', key, math.max(1, math.ceil(seconds * 1000)))
end

local function suppressed(reason)
  return {v = 'suppressed', r = reason, d = '', p = '0', i = {}}
end

-- Reply: verdict, reason, defer_until, replayed, published, kept items...
local function reply(record, replayed)
  local out = {record.v, record.r, record.d, replayed, record.p}
  for _, item in ipairs(record.i) do
    out[#out + 1] = item
  end
  return out
end

-- Rules 2-5, which transactional decisions skip: a refusal record, or nil and the
-- items to push.
local function marketing_rules(a, pushes, items)
  if a.defer_until ~= '' then
    -- 2. Quiet hours.
    if a.expired then
      return suppressed('expired_in_quiet_hours'), {}
    end
    return {v = 'deferred', r = '', d = a.defer_until, p = '0', i = {}}, {}
  end
  -- 3. Pushes per window.
  if redis.call('ZCOUNT', pushes, '(' .. a.window_start, '+inf') >= a.max_per_window then
    return suppressed('max_per_window'), {}
  end
  -- 4. Minimum gap since the latest push.
  local latest = redis.call('ZRANGE', pushes, -1, -1, 'WITHSCORES')
  if #latest > 0 and tonumber(latest[2]) > a.now - a.min_gap then
    return suppressed('min_gap'), {}
  end
  -- 5. Item cooldown: pruning left only the items still cooling down.
  local kept = {}
  for _, item in ipairs(a.items) do
    if not redis.call('ZSCORE', items, item) then
      kept[#kept + 1] = item
    end
  end
  if #a.items > 0 and #kept == 0 then
    return suppressed('item_cooldown'), {}
  end
  return nil, kept
end

local function check()
  local pushes, items, records, decided = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local a = {
    decision_id = ARGV[2],
    now_text = ARGV[3],
    now = tonumber(ARGV[3]),
    window_start = ARGV[4],        -- pushes strictly after it count
    defer_until = ARGV[5],         -- '' outside quiet hours
    expired = ARGV[6] == '1',
    transactional = ARGV[7] == '1',
    budget = ARGV[8],              -- 'ask', 'granted' or 'refused'
    max_per_window = tonumber(ARGV[9]),
    min_gap = tonumber(ARGV[10]),
    cooldown = tonumber(ARGV[11]),
    retention = tonumber(ARGV[12]),
    ttl = tonumber(ARGV[13]),
    items = {},
  }
  for n = 14, #ARGV do
    a.items[#a.items + 1] = ARGV[n]
  end

  -- Prune: what is dropped here can no longer refuse anything.
  redis.call('ZREMRANGEBYSCORE', pushes, '-inf', a.now - a.retention)
  redis.call('ZREMRANGEBYSCORE', items, '-inf', a.now - a.cooldown)
  local old = redis.call('ZRANGEBYSCORE', decided, '-inf', a.now - a.ttl)
  for _, decision_id in ipairs(old) do
    redis.call('HDEL', records, decision_id)
  end
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', decided, '-inf', a.now - a.ttl)
  end

  -- 1. Idempotency: a known decision gets its recorded verdict (a deferral until it ends).
  local stored = redis.call('HGET', records, a.decision_id)
  if stored then
    local record = cjson.decode(stored)
    if record.v ~= 'deferred' or a.now < tonumber(record.d) then
      return reply(record, '1')
    end
  end

  local record, kept = nil, a.items
  if not a.transactional then
    record, kept = marketing_rules(a, pushes, items)
  end

  if record == nil then
    -- 6. Global budget: it lives in another hash slot, so the caller takes a token and
    -- checks again with the outcome (nothing is recorded until then).
    if a.budget == 'ask' then
      return {'budget'}
    elseif a.budget == 'granted' then
      redis.call('ZADD', pushes, a.now_text, a.decision_id)
      expire(pushes, a.retention)
      for _, item in ipairs(kept) do
        redis.call('ZADD', items, a.now_text, item)
      end
      if #kept > 0 then
        expire(items, a.cooldown)
      end
      record = {v = 'allowed', r = '', d = '', p = '0', i = kept}
    else
      record = suppressed('global_budget')
    end
  end

  redis.call('HSET', records, a.decision_id, cjson.encode(record))
  redis.call('ZADD', decided, a.now_text, a.decision_id)
  expire(records, a.ttl)
  expire(decided, a.ttl)
  return reply(record, '0')
end

local function take()
  local bucket = KEYS[1]
  local now, rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local force = ARGV[5] == '1'
  local state = redis.call('HMGET', bucket, 'tokens', 'ts')
  local tokens, ts = tonumber(state[1]), tonumber(state[2])
  if not tokens then
    tokens, ts = burst, now
  end
  if now > ts then
    tokens, ts = math.min(burst, tokens + (now - ts) * rate), now
  end
  local granted = force or tokens >= 1
  if granted then
    tokens = tokens - 1
  end
  redis.call('HSET', bucket, 'tokens', tokens, 'ts', ts)
  -- A missing bucket is a full one: the key may go once the bucket has refilled.
  expire(bucket, (burst - tokens) / rate)
  return granted and 1 or 0
end

-- Give back a token taken for a decision that was then not allowed.
local function refund()
  local bucket, burst = KEYS[1], tonumber(ARGV[2])
  local tokens = tonumber(redis.call('HGET', bucket, 'tokens'))
  if tokens then
    redis.call('HSET', bucket, 'tokens', math.min(burst, tokens + 1))
  end
  return 0
end

local function publish()
  local records, decided = KEYS[1], KEYS[2]
  local decision_id, now, ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
  local checked_at = redis.call('ZSCORE', decided, decision_id)
  local stored = redis.call('HGET', records, decision_id)
  if not checked_at or not stored or tonumber(checked_at) <= now - ttl then
    return 0
  end
  local record = cjson.decode(stored)
  if record.v ~= 'allowed' then
    return 0
  end
  record.p = '1'
  redis.call('HSET', records, decision_id, cjson.encode(record))
  return 1
end

local operations = {check = check, take = take, refund = refund, publish = publish}
return operations[ARGV[1]]()
