--[[----------------------------------------------------------------------------
PixeliftClient.lua: talks to `pixelift serve` (HTTP + JSON on 127.0.0.1).

The service writes service.json (its port) and token (0600) in its service folder; the
client reads both, sends the token on every request, and starts the service with
`pixelift serve --detach` when none answers. Only LrHttp, LrFileUtils, LrPathUtils,
LrTasks and LrPrefs are used, so the logic runs under a fake SDK in the tests.
------------------------------------------------------------------------------]]

local LrHttp = import 'LrHttp'
local LrFileUtils = import 'LrFileUtils'
local LrPathUtils = import 'LrPathUtils'
local LrTasks = import 'LrTasks'
local LrPrefs = import 'LrPrefs'

local json = require 'PixeliftJSON'

local Client = {}
Client.__index = Client

Client.TOKEN_HEADER = 'X-Pixelift-Token'
Client.TERMINAL = { done = true, failed = true, cancelled = true }

local function prefs()
	local p = LrPrefs.prefsForPlugin()
	if p.pixeliftPath == nil or p.pixeliftPath == '' then p.pixeliftPath = 'pixelift' end
	return p
end
Client.prefs = prefs

-- The service folder, as pixelift computes it (pixelift/paths.py + platformdirs):
-- $PIXELIFT_SERVICE_DIR, else $PIXELIFT_HOME/service, else the user cache folder.
function Client.serviceFolder()
	local p = prefs()
	if p.serviceFolder and p.serviceFolder ~= '' then return p.serviceFolder end
	local env = os.getenv('PIXELIFT_SERVICE_DIR')
	if env and env ~= '' then return env end
	local home = os.getenv('PIXELIFT_HOME')
	if home and home ~= '' then return LrPathUtils.child(home, 'service') end
	local user = LrPathUtils.getStandardFilePath('home')
	if WIN_ENV then
		local appdata = os.getenv('LOCALAPPDATA') or LrPathUtils.child(user, 'AppData\\Local')
		return LrPathUtils.child(LrPathUtils.child(LrPathUtils.child(appdata, 'pixelift'), 'Cache'), 'service')
	elseif MAC_ENV then
		return LrPathUtils.child(LrPathUtils.child(LrPathUtils.child(user, 'Library'), 'Caches'), 'pixelift/service')
	end
	local cache = os.getenv('XDG_CACHE_HOME')
	if not cache or cache == '' then cache = LrPathUtils.child(user, '.cache') end
	return LrPathUtils.child(LrPathUtils.child(cache, 'pixelift'), 'service')
end

local function readFile(path)
	if LrFileUtils.exists(path) ~= 'file' then return nil end
	return LrFileUtils.readFile(path)
end

-- A client for the service described in the folder, or nil and why.
function Client.fromFolder(folder)
	folder = folder or Client.serviceFolder()
	local infoText = readFile(LrPathUtils.child(folder, 'service.json'))
	local token = readFile(LrPathUtils.child(folder, 'token'))
	if not infoText or not token then return nil, 'no pixelift service is running (nothing in ' .. folder .. ')' end
	local ok, info = pcall(json.decode, infoText)
	if not ok or type(info) ~= 'table' or not info.port then return nil, 'unreadable service.json in ' .. folder end
	local host = info.host or '127.0.0.1'
	if host:find(':') then host = '[' .. host .. ']' end
	local self = setmetatable({}, Client)
	self.baseUrl = 'http://' .. host .. ':' .. string.format('%.0f', info.port) .. '/v1'
	self.token = token:gsub('%s+$', '')
	self.folder = folder
	return self
end

-- One request; returns the decoded JSON, or nil, message, status.
function Client:request(method, path, body, timeout)
	local headers = { { field = Client.TOKEN_HEADER, value = self.token } }
	local url = self.baseUrl .. path
	local reply, hdrs
	if method == 'GET' then
		reply, hdrs = LrHttp.get(url, headers, timeout or 30)
	else
		headers[#headers + 1] = { field = 'Content-Type', value = 'application/json' }
		reply, hdrs = LrHttp.post(url, json.encode(body or {}), headers, method, timeout or 30)
	end
	local status = hdrs and tonumber(hdrs.status) or 0
	if reply == nil or status == 0 then
		local why = hdrs and hdrs.error and (hdrs.error.name or hdrs.error.errorCode) or 'no answer'
		return nil, 'the pixelift service cannot be reached (' .. tostring(why) .. ')', 0
	end
	local ok, decoded = pcall(json.decode, reply)
	if not ok then return nil, 'the pixelift service sent something that is not JSON (HTTP ' .. status .. ')', status end
	if status >= 400 then
		local msg = type(decoded) == 'table' and decoded.error and decoded.error.message or ('HTTP ' .. status)
		return nil, msg, status
	end
	return decoded, nil, status
end

function Client:health()
	return self:request('GET', '/health', nil, 5)
end

function Client:models()
	local reply, err = self:request('GET', '/models')
	return reply and reply.models, err
end

function Client:providers()
	return self:request('GET', '/providers')
end

function Client:submit(job)
	return self:request('POST', '/jobs', job)
end

function Client:job(id, wait)
	local query = wait and ('?wait=' .. tostring(wait)) or ''
	return self:request('GET', '/jobs/' .. id .. query, nil, (wait or 0) + 30)
end

function Client:cancel(id)
	return self:request('POST', '/jobs/' .. id .. '/cancel', {})
end

-- A running service, else nil and why (no start).
function Client.find()
	local client, why = Client.fromFolder()
	if not client then return nil, why end
	local health, err = client:health()
	if not health then return nil, err end
	client.version = health.version
	return client
end

local function shellQuote(s)
	if WIN_ENV then return '"' .. s .. '"' end
	return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- A running service, started with `pixelift serve --detach` when none answers.
function Client.ensure()
	local client = Client.find()
	if client then return client end
	local command = shellQuote(prefs().pixeliftPath) .. ' serve --detach'
	if WIN_ENV then command = '"' .. command .. '"' end -- cmd.exe strips one pair of quotes
	local status = LrTasks.execute(command)
	local why
	for _ = 1, 100 do
		client, why = Client.find()
		if client then return client end
		LrTasks.sleep(0.2)
	end
	return nil, 'could not start the pixelift service with ' .. command .. ' (exit status ' .. tostring(status) .. '): '
		.. tostring(why) .. '. Check the pixelift path in the Plug-in Manager.'
end

-- Polls of a job that may fail in a row (a busy machine, a slow reply) before the service counts as lost.
Client.POLL_RETRIES = 10

-- Wait for a job, calling onUpdate(status) on each change; onUpdate returns true to cancel.
function Client:follow(id, onUpdate)
	local status, err = self:job(id)
	local cancelled, failures = false, 0
	while status or failures < Client.POLL_RETRIES do
		if status then
			failures = 0
			if onUpdate(status) and not cancelled then
				self:cancel(id)
				cancelled = true
			end
			if Client.TERMINAL[status.status] then return status end
		else
			failures = failures + 1
			LrTasks.sleep(1)
		end
		status, err = self:job(id, 1)
	end
	return nil, err
end

return Client
