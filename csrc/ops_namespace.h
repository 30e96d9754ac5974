// The namespace the ops register under: torch.ops.hdas. The emulated CUDA build (csrc/emu) compiles
// the same schema and launcher sources with HDAS_OPS_NAMESPACE=hdas_emu, so that its ops load beside
// the real ones.
#pragma once

#ifndef HDAS_OPS_NAMESPACE
#define HDAS_OPS_NAMESPACE hdas
#endif
