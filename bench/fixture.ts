/** The guest the metadata and config drive benchmarks serve: the cloud-init unit tests' Linux guest. */
export { linuxConfig as benchGuestConfig } from "../test/unit/cloud-init/guest-configs.js";
