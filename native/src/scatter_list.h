// Many scatter copies between two descriptors in one call (scatter_list.cc).
#pragma once
#include <napi.h>

namespace dmtool {

// Registers `scatterList` on `exports`.
void InitScatterList(Napi::Env env, Napi::Object exports);

}  // namespace dmtool
