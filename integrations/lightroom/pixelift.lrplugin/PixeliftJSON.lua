--[[----------------------------------------------------------------------------
PixeliftJSON.lua: a small JSON encoder/decoder in pure Lua (Lightroom has none).

Lua 5.1 semantics (Lightroom's): no integer division, no bit operators, no goto.
  json.encode(value)   -> string; tables with keys 1..n are arrays, others objects
                          (string keys only); json.null encodes null; json.array(t)
                          marks a table (even an empty one) as an array.
  json.decode(text)    -> value; null becomes nil (object keys with null are absent).
                          Raises an error "json: ... at position N" on bad input.
------------------------------------------------------------------------------]]

local json = {}

json.null = setmetatable({}, { __tostring = function() return 'null' end })
local ARRAY_MT = { __jsontype = 'array' }

function json.array(t)
	return setmetatable(t or {}, ARRAY_MT)
end

local escapes = {
	['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
	['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}

local function escapeString(s)
	return '"' .. s:gsub('[%c"\\]', function(c)
		return escapes[c] or string.format('\\u%04x', c:byte())
	end) .. '"'
end

local function isArray(t)
	if getmetatable(t) == ARRAY_MT then return true end
	local n = 0
	for k in pairs(t) do
		if type(k) ~= 'number' or k < 1 or math.floor(k) ~= k then return false end
		if k > n then n = k end
	end
	if n == 0 then return false end
	for i = 1, n do
		if t[i] == nil then return false end
	end
	return true
end

local encodeValue

local function encodeTable(t, seen)
	if seen[t] then error('json: cannot encode a table that contains itself') end
	seen[t] = true
	local parts = {}
	if isArray(t) then
		for i = 1, #t do parts[i] = encodeValue(t[i], seen) end
		seen[t] = nil
		return '[' .. table.concat(parts, ',') .. ']'
	end
	local keys = {}
	for k in pairs(t) do
		if type(k) ~= 'string' then error('json: object keys must be strings, not ' .. type(k)) end
		keys[#keys + 1] = k
	end
	table.sort(keys)
	for i, k in ipairs(keys) do parts[i] = escapeString(k) .. ':' .. encodeValue(t[k], seen) end
	seen[t] = nil
	return '{' .. table.concat(parts, ',') .. '}'
end

encodeValue = function(v, seen)
	local kind = type(v)
	if v == nil or v == json.null then return 'null' end
	if kind == 'boolean' then return v and 'true' or 'false' end
	if kind == 'number' then
		if v ~= v or v == math.huge or v == -math.huge then error('json: cannot encode ' .. tostring(v)) end
		if math.floor(v) == v and v > -1e15 and v < 1e15 then return string.format('%.0f', v) end
		return string.format('%.17g', v)
	end
	if kind == 'string' then return escapeString(v) end
	if kind == 'table' then return encodeTable(v, seen) end
	error('json: cannot encode a ' .. kind)
end

function json.encode(value)
	return encodeValue(value, {})
end

-- decoding ---------------------------------------------------------------------

local function fail(text, pos, what)
	error(string.format('json: %s at position %d', what, pos), 0)
end

local function skip(text, pos)
	return text:find('[^ \t\r\n]', pos) or #text + 1
end

local function utf8char(cp)
	if cp < 0x80 then return string.char(cp) end
	if cp < 0x800 then
		return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
	end
	if cp < 0x10000 then
		return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
	end
	return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
		0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local decodeValue

local function decodeString(text, pos)
	-- pos is at the opening quote
	local out, i = {}, pos + 1
	while true do
		local c = text:sub(i, i)
		if c == '' then fail(text, pos, 'unterminated string') end
		if c == '"' then return table.concat(out), i + 1 end
		if c == '\\' then
			local e = text:sub(i + 1, i + 1)
			local simple = ({ ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' })[e]
			if simple then
				out[#out + 1] = simple
				i = i + 2
			elseif e == 'u' then
				local hex = text:sub(i + 2, i + 5)
				if not hex:match('^%x%x%x%x$') then fail(text, i, 'bad \\u escape') end
				local cp = tonumber(hex, 16)
				i = i + 6
				if cp >= 0xD800 and cp <= 0xDBFF then
					local low = text:match('^\\u(%x%x%x%x)', i)
					local lo = low and tonumber(low, 16)
					if not lo or lo < 0xDC00 or lo > 0xDFFF then fail(text, i, 'lone surrogate') end
					cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
					i = i + 6
				end
				out[#out + 1] = utf8char(cp)
			else
				fail(text, i, 'bad escape')
			end
		elseif c:byte() < 0x20 then
			fail(text, i, 'control character in string')
		else
			local j = text:find('["\\%c]', i) or #text + 1
			out[#out + 1] = text:sub(i, j - 1)
			i = j
		end
	end
end

local function decodeNumber(text, pos)
	local num = text:match('^-?%d+%.?%d*[eE]?[-+]?%d*', pos)
	if not num or not num:match('^-?%d') then fail(text, pos, 'bad number') end
	local value = tonumber(num)
	if value == nil then fail(text, pos, 'bad number') end
	return value, pos + #num
end

local literals = { ['true'] = true, ['false'] = false }

decodeValue = function(text, pos)
	pos = skip(text, pos)
	local c = text:sub(pos, pos)
	if c == '{' then
		local obj = {}
		pos = skip(text, pos + 1)
		if text:sub(pos, pos) == '}' then return obj, pos + 1 end
		while true do
			if text:sub(pos, pos) ~= '"' then fail(text, pos, 'expected a string key') end
			local key
			key, pos = decodeString(text, pos)
			pos = skip(text, pos)
			if text:sub(pos, pos) ~= ':' then fail(text, pos, "expected ':'") end
			local value
			value, pos = decodeValue(text, pos + 1)
			obj[key] = value
			pos = skip(text, pos)
			local d = text:sub(pos, pos)
			if d == '}' then return obj, pos + 1 end
			if d ~= ',' then fail(text, pos, "expected ',' or '}'") end
			pos = skip(text, pos + 1)
		end
	elseif c == '[' then
		local arr, n = json.array({}), 0
		pos = skip(text, pos + 1)
		if text:sub(pos, pos) == ']' then return arr, pos + 1 end
		while true do
			local value
			value, pos = decodeValue(text, pos)
			n = n + 1
			arr[n] = value
			pos = skip(text, pos)
			local d = text:sub(pos, pos)
			if d == ']' then return arr, pos + 1 end
			if d ~= ',' then fail(text, pos, "expected ',' or ']'") end
			pos = pos + 1
		end
	elseif c == '"' then
		return decodeString(text, pos)
	elseif c == '-' or c:match('%d') then
		return decodeNumber(text, pos)
	end
	for word, value in pairs(literals) do
		if text:sub(pos, pos + #word - 1) == word then return value, pos + #word end
	end
	if text:sub(pos, pos + 3) == 'null' then return nil, pos + 4 end
	if c == '' then fail(text, pos, 'unexpected end of input') end
	fail(text, pos, 'unexpected character ' .. string.format('%q', c))
end

function json.decode(text)
	if type(text) ~= 'string' then error('json: can only decode a string, not ' .. type(text), 0) end
	local value, pos = decodeValue(text, 1)
	pos = skip(text, pos)
	if pos <= #text then fail(text, pos, 'trailing characters') end
	return value
end

return json
