/** The filters DescribeDisks and DescribeSnapshots take (the API's schemas check names against these lists). */
export const DISK_FILTER_NAMES = ["disk-id", "disk-usage", "disk-type", "disk-state", "disk-name", "instance-id", "zone"] as const;
export type DiskFilterName = (typeof DISK_FILTER_NAMES)[number];

export const SNAPSHOT_FILTER_NAMES = ["snapshot-id", "disk-id", "disk-usage", "snapshot-name", "snapshot-state"] as const;
export type SnapshotFilterName = (typeof SNAPSHOT_FILTER_NAMES)[number];
