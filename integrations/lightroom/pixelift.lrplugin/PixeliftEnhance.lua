--[[----------------------------------------------------------------------------
PixeliftEnhance.lua: "Enhance with pixelift…" for every selected photo.

1. a dialog (model or autopilot, scale, precision, provider; choices read from the service);
2. each photo is exported as a 16-bit TIFF in ProPhoto RGB (or the colour space chosen);
3. one job for all of them goes to `pixelift serve` (started if it is not running);
4. progress shows in a progress scope whose cancel cancels the job;
5. each result is imported next to its original, stacked above it, with rating, colour
   label, keywords, caption and GPS copied; errors are listed in one dialog at the end, and so are
   the warnings (a provider passed over) when there is no error.
------------------------------------------------------------------------------]]

local LrApplication = import 'LrApplication'
local LrDialogs = import 'LrDialogs'
local LrExportSession = import 'LrExportSession'
local LrFileUtils = import 'LrFileUtils'
local LrFunctionContext = import 'LrFunctionContext'
local LrPathUtils = import 'LrPathUtils'
local LrProgressScope = import 'LrProgressScope'
local LrTasks = import 'LrTasks'
local LrView = import 'LrView'
local LrBinding = import 'LrBinding'

local Client = require 'PixeliftClient'

local Enhance = {}

Enhance.COLOR_SPACES = { 'ProPhotoRGB', 'AdobeRGB', 'DisplayP3', 'sRGB' }
Enhance.SUFFIX = '-pixelift'

-- Popup menu items from a list of values.
function Enhance.items(list)
	local out = {}
	for _, v in ipairs(list or { 'auto' }) do out[#out + 1] = { title = v, value = v } end
	return out
end

-- The export settings for the intermediate file: 16-bit TIFF, full size, no sharpening.
function Enhance.exportSettings(folder, colorSpace)
	return {
		LR_format = 'TIFF',
		LR_export_bitDepth = 16,
		LR_export_colorSpace = colorSpace or 'ProPhotoRGB',
		LR_tiff_compressionMethod = 'compressionMethod_ZIP',
		LR_export_destinationType = 'specificFolder',
		LR_export_destinationPathPrefix = folder,
		LR_export_useSubfolder = false,
		LR_collisionHandling = 'rename',
		LR_reimportExportedPhoto = false,
		LR_size_doConstrain = false,
		LR_outputSharpeningOn = false,
		LR_useWatermark = false,
		LR_minimizeEmbeddedMetadata = false,
		LR_removeLocationMetadata = false,
		LR_includeVideoFiles = false,
	}
end

-- The job's options from the dialog's settings.
function Enhance.jobOptions(settings)
	local job = {
		model = settings.model or 'auto',
		format = 'tiff',
		precision = settings.precision or 'auto',
		provider = settings.provider or 'auto',
	}
	local scale = tonumber(settings.scale)
	if scale then job.scale = scale end
	return job
end

-- Where a result goes: beside the original, "<name>-pixelift.tif", never over a file nor over
-- another result of the same job (`taken`): a RAW+JPEG pair, or a photo and its virtual copy,
-- share a name and a folder.
function Enhance.resultPath(original, taken)
	taken = taken or {}
	local folder = LrPathUtils.parent(original)
	local stem = LrPathUtils.removeExtension(LrPathUtils.leafName(original))
	local path = LrPathUtils.child(folder, stem .. Enhance.SUFFIX .. '.tif')
	local n = 1
	while LrFileUtils.exists(path) or taken[path] do
		n = n + 1
		path = LrPathUtils.child(folder, stem .. Enhance.SUFFIX .. '-' .. n .. '.tif')
	end
	taken[path] = true
	return path
end

-- Copy what a person set on the original to the imported result (inside write access).
function Enhance.copyMetadata(original, result)
	local rating = original:getRawMetadata('rating')
	if rating then result:setRawMetadata('rating', rating) end
	local label = original:getRawMetadata('colorNameForLabel')
	if label and label ~= 'none' then result:setRawMetadata('colorNameForLabel', label) end
	local caption = original:getFormattedMetadata('caption')
	if caption and caption ~= '' then result:setRawMetadata('caption', caption) end
	local title = original:getFormattedMetadata('title')
	if title and title ~= '' then result:setRawMetadata('title', title) end
	local gps = original:getRawMetadata('gps')
	if gps then result:setRawMetadata('gps', gps) end
	local altitude = original:getRawMetadata('gpsAltitude')
	if altitude then result:setRawMetadata('gpsAltitude', altitude) end
	for _, keyword in ipairs(original:getRawMetadata('keywords') or {}) do
		result:addKeyword(keyword)
	end
end

-- The imported result, or nil and why (the result file stays beside the original either way).
local function importResult(catalog, original, path)
	local imported
	local ok, err = LrTasks.pcall(function()
		catalog:withWriteAccessDo('Import pixelift result', function()
			imported = catalog:addPhoto(path, original, 'above')
			Enhance.copyMetadata(original, imported)
		end, { timeout = 60 })
	end)
	if not ok then return nil, tostring(err) end
	if not imported then return nil, 'Lightroom did not add it to the catalog' end
	return imported
end

local function fileName(path)
	return LrPathUtils.leafName(path or '?')
end

-- Enhance photos with settings; returns a summary table (also used by the tests).
function Enhance.run(photos, settings)
	local summary = { imported = {}, errors = {}, warnings = {}, cancelled = false }
	if #photos == 0 then
		summary.errors[1] = 'Select one or more photos first.'
		return summary
	end
	local client, why = Client.ensure()
	if not client then
		summary.errors[1] = why
		return summary
	end
	local catalog = LrApplication.activeCatalog()
	local scope = LrProgressScope { title = 'Enhance with pixelift (' .. #photos .. ' photos)' }
	scope:setCancelable(true)
	local tempFolder = LrPathUtils.child(LrPathUtils.getStandardFilePath('temp'),
		'pixelift-' .. string.format('%.0f', os.time()) .. '-' .. math.random(100000, 999999))
	LrFileUtils.createAllDirectories(tempFolder)

	-- 1. export every photo as a 16-bit TIFF (first third of the progress)
	scope:setCaption('Exporting 16-bit TIFFs')
	local session = LrExportSession {
		photosToExport = photos,
		exportSettings = Enhance.exportSettings(tempFolder, settings.colorSpace),
	}
	local inputs, outputs, originals, taken = {}, {}, {}, {}
	local n = 0
	for _, rendition in session:renditions { stopIfCanceled = true } do
		local ok, pathOrMessage = rendition:waitForRender()
		n = n + 1
		if ok then
			local original = rendition.photo
			inputs[#inputs + 1] = pathOrMessage
			outputs[#outputs + 1] = Enhance.resultPath(original:getRawMetadata('path'), taken)
			originals[#originals + 1] = original
		else
			summary.errors[#summary.errors + 1] = fileName(rendition.photo:getRawMetadata('path')) .. ': export failed: ' .. tostring(pathOrMessage)
		end
		scope:setPortionComplete(n / #photos / 3)
		if scope:isCanceled() then break end
	end

	-- 2. one job for all of them; results are imported as each file finishes
	if #inputs > 0 and not scope:isCanceled() then
		-- whatever goes wrong in here, the scope ends and the intermediate TIFFs are removed below
		local ok, err = LrTasks.pcall(function()
			local job = Enhance.jobOptions(settings)
			job.inputs, job.outputs = inputs, outputs
			local submitted, err = client:submit(job)
			if not submitted then
				summary.errors[#summary.errors + 1] = 'the service refused the job: ' .. tostring(err)
			else
				summary.job = submitted.id
				local done, said = {}, {}
				local final
				final, err = client:follow(submitted.id, function(status)
					local progress = 0
					for i, f in ipairs(status.files) do
						for _, w in ipairs(f.warnings or {}) do -- a provider passed over, said once
							if not said[w] then
								said[w] = true
								summary.warnings[#summary.warnings + 1] = w
							end
						end
						if f.status == 'done' and not done[i] then
							done[i] = true
							local imported, why = importResult(catalog, originals[i], f.output)
							if imported then
								summary.imported[#summary.imported + 1] = imported
							else -- this photo only: the others still finish
								summary.errors[#summary.errors + 1] = fileName(f.output) .. ': written, but not imported: ' .. why
							end
						elseif f.status == 'error' and not done[i] then
							done[i] = true
							summary.errors[#summary.errors + 1] = fileName(f.input) .. ': ' .. tostring(f.error)
						end
						if f.status == 'running' then
							local caption = 'Enhancing ' .. i .. ' of ' .. #status.files .. ': ' .. fileName(inputs[i])
							local events = f.events or {}
							if #events > 0 then caption = caption .. ' (' .. events[#events] .. ')' end -- a first run's one-time work
							scope:setCaption(caption)
							if (f.tiles_total or 0) > 0 then progress = progress + f.tiles_done / f.tiles_total end
						elseif f.status ~= 'pending' then
							progress = progress + 1
						end
					end
					scope:setPortionComplete(1 / 3 + 2 / 3 * progress / #status.files)
					return scope:isCanceled()
				end)
				if not final then
					client:cancel(submitted.id) -- if it is still there: its inputs are about to be deleted
					summary.errors[#summary.errors + 1] = 'lost the pixelift service during the job: ' .. tostring(err)
				end
				summary.cancelled = final ~= nil and final.status == 'cancelled'
			end
		end)
		if not ok then summary.errors[#summary.errors + 1] = 'unexpected error: ' .. tostring(err) end
	end

	summary.cancelled = summary.cancelled or scope:isCanceled()
	for _, path in ipairs(inputs) do LrFileUtils.delete(path) end
	LrFileUtils.delete(tempFolder)
	scope:done()
	return summary
end

function Enhance.report(summary)
	if #summary.errors > 0 then
		local text = table.concat(summary.errors, '\n')
		if #summary.warnings > 0 then text = text .. '\n\n' .. table.concat(summary.warnings, '\n') end
		LrDialogs.message('pixelift: ' .. #summary.errors .. ' problem(s)', text, 'critical')
	elseif #summary.warnings > 0 then
		LrDialogs.message('pixelift: done, with ' .. #summary.warnings .. ' warning(s)', table.concat(summary.warnings, '\n'), 'warning')
	end
end

-- The dialog; returns the settings, or nil when the user cancels.
function Enhance.dialog(context, client)
	local prefs = Client.prefs()
	local props = LrBinding.makePropertyTable(context)
	props.model = prefs.lastModel or 'auto'
	props.scale = prefs.lastScale or '2'
	props.precision = prefs.lastPrecision or 'auto'
	props.provider = prefs.lastProvider or 'auto'
	props.colorSpace = prefs.lastColorSpace or 'ProPhotoRGB'
	local modelItems = { { title = 'Autopilot (chooses per photo)', value = 'auto' } }
	for _, m in ipairs(client:models() or {}) do
		modelItems[#modelItems + 1] = { title = m.id .. ' (' .. m.task .. ' x' .. m.scale .. ')', value = m.id }
	end
	local providers = client:providers() or {}
	local items = Enhance.items
	local f = LrView.osFactory()
	local bind = LrView.bind
	local contents = f:column {
		bind_to_object = props,
		spacing = f:control_spacing(),
		f:row { f:static_text { title = 'Task or model:', width = 110 }, f:popup_menu { value = bind 'model', items = modelItems } },
		f:row { f:static_text { title = 'Scale:', width = 110 }, f:popup_menu { value = bind 'scale', items = items { '1', '2', '3', '4' } } },
		f:row { f:static_text { title = 'Precision:', width = 110 }, f:popup_menu { value = bind 'precision', items = items(providers.precisions) } },
		f:row { f:static_text { title = 'Provider:', width = 110 }, f:popup_menu { value = bind 'provider', items = items(providers.choices) } },
		f:row { f:static_text { title = 'Export as:', width = 110 }, f:popup_menu { value = bind 'colorSpace', items = items(Enhance.COLOR_SPACES) } },
	}
	local result = LrDialogs.presentModalDialog { title = 'Enhance with pixelift', contents = contents, actionVerb = 'Enhance' }
	if result ~= 'ok' then return nil end
	prefs.lastModel, prefs.lastScale, prefs.lastPrecision = props.model, props.scale, props.precision
	prefs.lastProvider, prefs.lastColorSpace = props.provider, props.colorSpace
	return { model = props.model, scale = props.scale, precision = props.precision, provider = props.provider, colorSpace = props.colorSpace }
end

-- The menu item: every selected photo (catalog:getTargetPhotos), not just the first.
function Enhance.fromMenu()
	local summary
	LrFunctionContext.callWithContext('pixelift', function(context)
		local photos = LrApplication.activeCatalog():getTargetPhotos()
		if #photos == 0 then
			LrDialogs.message('pixelift', 'Select one or more photos first.', 'info')
			return
		end
		local client, why = Client.ensure()
		if not client then
			LrDialogs.message('pixelift: the service is not available', why, 'critical')
			return
		end
		local settings = Enhance.dialog(context, client)
		if not settings then return end
		summary = Enhance.run(photos, settings)
		Enhance.report(summary)
	end)
	return summary
end

function Enhance.startFromMenu()
	LrTasks.startAsyncTask(function()
		local ok, err = LrTasks.pcall(Enhance.fromMenu)
		if not ok then LrDialogs.message('pixelift: unexpected error', tostring(err), 'critical') end
	end)
end

return Enhance
