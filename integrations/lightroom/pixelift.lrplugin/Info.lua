--[[----------------------------------------------------------------------------
Info.lua: pixelift for Lightroom Classic.
Enhance (upscale, denoise, de-JPEG) every selected photo through a warm local
`pixelift serve`; results are stacked above their originals.
------------------------------------------------------------------------------]]

return {
	LrSdkVersion = 10.0,
	LrSdkMinimumVersion = 6.0,
	LrToolkitIdentifier = 'org.pixelift.lightroom',
	LrPluginName = 'pixelift',
	LrPluginInfoUrl = 'https://pypi.org/project/pixelift/',
	LrPluginInfoProvider = 'PixeliftInfoProvider.lua',
	LrLibraryMenuItems = {
		{ title = 'Enhance with pixelift…', file = 'PixeliftMenuItem.lua', enabledWhen = 'photosSelected' },
	},
	LrExportMenuItems = {
		{ title = 'Enhance with pixelift…', file = 'PixeliftMenuItem.lua', enabledWhen = 'photosSelected' },
	},
	LrExportFilterProvider = {
		{ title = 'Enhance with pixelift', file = 'PixeliftExportFilter.lua', id = 'pixeliftEnhance' },
	},
	VERSION = { major = 0, minor = 1, revision = 0 },
}
