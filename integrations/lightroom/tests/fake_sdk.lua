--[[----------------------------------------------------------------------------
fake_sdk.lua: a fake Lightroom Classic SDK, enough to run the pixelift plug-in.

It needs a global PY table of host helpers (the Python test gives them): PY.http (a real
HTTP request), PY.execute (a real shell command), PY.sleep, PY.exists, PY.mkdirs,
PY.delete, PY.move, PY.render (writes a 16-bit TIFF for a photo, like an export).
Every call that matters is recorded in FAKE.calls; the catalog checks write access.
------------------------------------------------------------------------------]]

FAKE = { calls = {}, prefs = {}, photos = {}, selected = {}, cancelAfterPolls = nil, polls = 0, dialogs = {} }
WIN_ENV, MAC_ENV = false, false
_PLUGIN = { path = PY.pluginPath, id = 'org.pixelift.lightroom' }

local function record(name, fields)
	fields = fields or {}
	fields.name = name
	FAKE.calls[#FAKE.calls + 1] = fields
	return fields
end

local modules = {}

function import(name)
	local m = modules[name]
	if not m then error('the fake SDK has no ' .. tostring(name)) end
	return m
end

-- LrTasks ------------------------------------------------------------------------
modules.LrTasks = {
	startAsyncTask = function(fn) fn() end,
	sleep = function(s) PY.sleep(s) end,
	yield = function() end,
	pcall = pcall,
	execute = function(command)
		record('LrTasks.execute', { command = command })
		return PY.execute(command)
	end,
}

-- LrHttp: real HTTP through the host ------------------------------------------------
local function http(method, url, body, headers, timeout)
	local lines = {}
	for _, h in ipairs(headers or {}) do lines[#lines + 1] = h.field .. ': ' .. h.value end
	local status, reply = PY.http(method, url, body or '', table.concat(lines, '\n'), timeout or 30)
	if status == 0 then return nil, { error = { errorCode = 'cannotConnectToHost', name = reply } } end
	return reply, { status = status }
end
modules.LrHttp = {
	get = function(url, headers, timeout) return http('GET', url, nil, headers, timeout) end,
	post = function(url, body, headers, method, timeout) return http(method or 'POST', url, body, headers, timeout) end,
}

-- files and paths ---------------------------------------------------------------
modules.LrFileUtils = {
	exists = function(path) return PY.exists(path) end,
	readFile = function(path)
		local f = assert(io.open(path, 'rb'))
		local text = f:read('*a')
		f:close()
		return text
	end,
	createAllDirectories = function(path) PY.mkdirs(path) return true end,
	delete = function(path) return PY.delete(path) end,
	move = function(from, to) return PY.move(from, to) end,
}
modules.LrPathUtils = {
	child = function(a, b) return a:gsub('/+$', '') .. '/' .. b end,
	parent = function(p) return (p:gsub('/[^/]*$', '')) end,
	leafName = function(p) return (p:match('[^/]*$')) end,
	extension = function(p) return p:match('%.([^./]*)$') or '' end,
	removeExtension = function(p) return (p:gsub('%.[^./]*$', '')) end,
	getStandardFilePath = function(kind)
		if kind == 'temp' then return PY.tempDir end
		return PY.homeDir
	end,
}
modules.LrPrefs = { prefsForPlugin = function() return FAKE.prefs end }

-- progress, dialogs, views ------------------------------------------------------------
modules.LrProgressScope = setmetatable({}, { __call = function(_, args)
	local scope = { title = args.title, portions = {}, captions = {}, finished = false }
	record('LrProgressScope', { title = args.title, scope = scope })
	function scope:setCancelable(v) self.cancelable = v end
	function scope:setPortionComplete(x) self.portions[#self.portions + 1] = x end
	function scope:setCaption(c) self.captions[#self.captions + 1] = c end
	function scope:isCanceled()
		FAKE.polls = FAKE.polls + 1
		return FAKE.cancelAfterPolls ~= nil and FAKE.polls > FAKE.cancelAfterPolls
	end
	function scope:done() self.finished = true end
	FAKE.scope = scope
	return scope
end })
modules.LrDialogs = {
	message = function(title, text, kind) record('LrDialogs.message', { title = title, text = text, kind = kind }) end,
	showError = function(text) record('LrDialogs.showError', { text = text }) end,
	presentModalDialog = function(args)
		record('LrDialogs.presentModalDialog', { title = args.title, contents = args.contents })
		return FAKE.dialogAnswer or 'ok'
	end,
}
local factory = setmetatable({}, { __index = function(_, kind)
	return function(_, args) return { kind = kind, args = args } end
end })
modules.LrView = {
	osFactory = function() return factory end,
	bind = function(key) return { bind = key } end,
}
modules.LrBinding = { makePropertyTable = function() return {} end }
modules.LrFunctionContext = {
	callWithContext = function(_, fn, ...)
		local context = { addCleanupHandler = function() end, addFailureHandler = function() end }
		return fn(context, ...)
	end,
}

-- photos and the catalog ---------------------------------------------------------------
local Photo = {}
Photo.__index = Photo

function FAKE.newPhoto(meta)
	local photo = setmetatable({ raw = meta.raw or {}, formatted = meta.formatted or {}, keywords = {} }, Photo)
	for _, k in ipairs(meta.keywords or {}) do photo.keywords[#photo.keywords + 1] = { name = k } end
	photo.raw.keywords = photo.keywords
	FAKE.photos[#FAKE.photos + 1] = photo
	return photo
end

function Photo:getRawMetadata(key) return self.raw[key] end
function Photo:getFormattedMetadata(key) return self.formatted[key] end
function Photo:setRawMetadata(key, value)
	assert(FAKE.writeAccess, 'setRawMetadata outside catalog:withWriteAccessDo')
	record('photo:setRawMetadata', { photo = self, key = key, value = value })
	self.raw[key] = value
end
function Photo:addKeyword(keyword)
	assert(FAKE.writeAccess, 'addKeyword outside catalog:withWriteAccessDo')
	record('photo:addKeyword', { photo = self, keyword = keyword.name })
	self.keywords[#self.keywords + 1] = keyword
end

local catalog = {}
function catalog:getTargetPhotos() return FAKE.selected end
function catalog:getTargetPhoto() return FAKE.selected[1] end
function catalog:withWriteAccessDo(action, fn)
	assert(not FAKE.writeAccess, 'nested withWriteAccessDo')
	FAKE.writeAccess = true
	record('catalog:withWriteAccessDo', { action = action })
	local ok, err = pcall(fn, {})
	FAKE.writeAccess = false
	if not ok then error(err, 0) end
end
function catalog:addPhoto(path, stackWith, position)
	assert(FAKE.writeAccess, 'addPhoto outside catalog:withWriteAccessDo')
	assert(PY.exists(path) == 'file', 'addPhoto of a missing file ' .. path)
	local photo = FAKE.newPhoto { raw = { path = path } }
	record('catalog:addPhoto', { path = path, stackWith = stackWith, position = position, photo = photo })
	return photo
end
modules.LrApplication = { activeCatalog = function() return catalog end }

-- export ------------------------------------------------------------------------
modules.LrExportSession = setmetatable({}, { __call = function(_, args)
	local settings = args.exportSettings
	record('LrExportSession', { settings = settings, count = #args.photosToExport })
	local session = {}
	function session:renditions()
		local i = 0
		return function()
			i = i + 1
			local photo = args.photosToExport[i]
			if not photo then return nil end
			local rendition = { photo = photo }
			function rendition:waitForRender()
				local leaf = modules.LrPathUtils.removeExtension(modules.LrPathUtils.leafName(photo.raw.path)) .. '.tif'
				local dest = modules.LrPathUtils.child(settings.LR_export_destinationPathPrefix, leaf)
				local ok, err = PY.render(photo.raw.path, dest, settings.LR_format, settings.LR_export_bitDepth)
				if not ok then return false, err end
				return true, dest
			end
			return i, rendition
		end
	end
	function session:doExportOnCurrentTask() for _ in self:renditions() do end end
	return session
end })

-- run a file of the plug-in as Lightroom would (menu scripts are files, not modules)
function FAKE.runPluginFile(name)
	return dofile(_PLUGIN.path .. '/' .. name)
end
