-- wrk body script: an etcd v3 put of a new key per request, through etcd's JSON gateway
-- (keys and values are base64). Run from the repository root.
dofile("scripts/wrk/common.lua")
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    -- 1 byte → 2 characters, 2 → 3, 3 → 4; the rest of the quad is padding.
    local keep = (b == nil and 2) or (c == nil and 3) or 4
    for j = 1, 4 do
      if j <= keep then
        local k = math.floor(n / 64 ^ (4 - j)) % 64
        out[#out + 1] = alphabet:sub(k + 1, k + 1)
      else
        out[#out + 1] = "="
      end
    end
  end
  return table.concat(out)
end
local value = b64('{"name":"wrk","score":42.5}')
function request()
  local key = b64("students/" .. next_id())
  return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"},
    '{"key":"' .. key .. '","value":"' .. value .. '"}')
end
