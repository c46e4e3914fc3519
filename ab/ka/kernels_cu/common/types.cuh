// NVRTC std shim: the kernels include no toolkit header, so NVRTC needs no CUDA
// include path on the user's machine. Fixed-width names are our own to avoid
// clashing with <cstdint> should a later file include it.
#pragma once

using u8 = unsigned char;
using u16 = unsigned short;
using u32 = unsigned int;
using i32 = int;
using i64 = long long;
using u64 = unsigned long long;

// Output element kinds, fixed as template arguments. Keep in sync with
// cugroupgemm/dtypes.py (OutKind).
enum OutKind : int { OUT_BF16 = 0, OUT_F16 = 1, OUT_F32 = 2 };

// Input element kinds of the quantizers. Keep in sync with cugroupgemm/dtypes.py (InKind).
enum InKind : int { IN_F32 = 0, IN_BF16 = 1, IN_F16 = 2 };

constexpr int SCALE_BLOCK = 128;  // k (and n) extent of one fp32 scale
