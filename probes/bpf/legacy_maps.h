/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Map definitions in the legacy "maps" section, for every probe.
 *
 * Why not BTF-defined maps (SEC(".maps")): aya 0.14 creates a BTF-defined map
 * with its BTF key and value type ids even when the kernel has no BTF (4.16,
 * 4.17), and such a kernel refuses the map (EINVAL: bpf_attr fields it does not
 * know must be zero). Seen on 4.16.13: "failed to create map `jmp_table`:
 * Invalid argument". A legacy definition carries no BTF ids and loads on every
 * kernel from 4.x to today; the programs' own BTF (needed by fentry/fexit on
 * tc_verdict) is unaffected.
 */
#ifndef BPFMATRIX_LEGACY_MAPS_H
#define BPFMATRIX_LEGACY_MAPS_H

#include <linux/types.h>

/* The first five fields of libbpf's old struct bpf_map_def, which aya reads. */
struct legacy_map_def {
	__u32 type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
};

#define LEGACY_MAP(name, map_type, key_type, value_type, entries)          \
	struct legacy_map_def name __attribute__((section("maps"), used)) = { \
		.type = (map_type),                                            \
		.key_size = sizeof(key_type),                                  \
		.value_size = sizeof(value_type),                              \
		.max_entries = (entries),                                      \
	}

#endif
