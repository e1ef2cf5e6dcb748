/**
 * Wires the agent together from a validated config: drivers, the instance registry,
 * recovery, the event stream, the API server and the reporter.
 */
import { mkdir, chmod } from "node:fs/promises";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { LocalRunner } from "../drivers/exec/local.js";
import { addSecret } from "../drivers/exec/sanitize.js";
import type { CommandRunner } from "../drivers/exec/runner.js";
import { VirshHypervisor } from "../drivers/libvirt/virsh.js";
import { VirshNetworks } from "../drivers/libvirt/networks.js";
import { VirshSession } from "../drivers/libvirt/virsh-session.js";
import type { VirtType } from "../drivers/libvirt/types.js";
import { QemuImg } from "../drivers/storage/qemu-img.js";
import { getHostFacts } from "../drivers/host/facts.js";
import type { createApiServer } from "./api/server.js";
import { computeHostResource, type HostResource } from "./capacity.js";
import type { AgentConfig, Credential } from "./config.js";
import type { createDispatcher } from "./dispatch.js";
import { ImageCatalog } from "./images/catalog.js";
import { listQcow2Files } from "./images/sweep.js";
import { Journal } from "./journal.js";
import { isoSeconds } from "./model.js";
import { DataPaths } from "./paths.js";
import { Reporter } from "./reporter.js";
import { InstanceRegistry } from "./instances/registry.js";
import { createInstanceOperations, type InstanceOperations } from "./instances/index.js";
import { launchConcurrency } from "./instances/launch-queue.js";
import { Operations } from "./core/operations.js";
import { cvmCodeOf } from "./api/error-map.js";
import { InstanceSync } from "./instances/sync.js";
import { powerRestoreView } from "./instances/power-restore.js";
import { QemuWatch } from "./instances/qemu-watch.js";
import { toCvmInstance } from "./instances/views.js";
import { loadOrCreateCredentials } from "./credentials-file.js";
import { GuestDocumentsService } from "./guests.js";
import { KeyPairStore, keyPairsFile } from "./logins/keypairs.js";
import { createMetadataServer, type MetadataServer } from "./metadata/server.js";
import { ensureMetadataRedirect } from "../drivers/network/metadata-redirect.js";
import { HostNameStore, type HostIdentity } from "./host.js";
import { PoolSet } from "./storage/pools.js";
import { InventorySweep } from "./storage/inventory.js";
import { createTask } from "node-cron";
import { Storage } from "./storage/storage.js";
import { DiskStore } from "./disks/store.js";
import { DiskService } from "./disks/service.js";
import { SnapshotService } from "./disks/snapshots.js";
import { SecurityGroupService } from "./network/security-groups/service.js";
import { SecurityGroupStore, securityGroupsFile } from "./network/security-groups/store.js";
import { namedGroupsOf } from "./network/security-groups/state.js";
import { NftFirewall, ensureBridgeNetfilter } from "./network/firewall.js";
import { BandwidthCaps } from "./network/bandwidth/service.js";
import { resetInternetMaxBandwidth } from "./network/bandwidth/reset.js";
import { NicEvents } from "./network/nic-events.js";
import { EniStore, enisFile } from "./network/enis/store.js";
import { EniJournal } from "./network/enis/journal.js";
import { EniService } from "./network/enis/service.js";
import type { createConsoles } from "./console/index.js";
import type { serialRoute } from "./console/serial.js";
import { prepareVncDir } from "./console/vnc-dir.js";
import { DhcpService } from "./network/dhcp/service.js";
import { migrateNicDefinitions, needsNicMigration } from "./network/nic-migration.js";
import { GuestFsCollector } from "./monitor/guest-fs.js";
import { HostMonitor } from "./monitor/monitor.js";
import { PERIODS, type Period } from "./monitor/metrics.js";
import { SeriesStore } from "./monitor/store.js";
import { AgentMetrics, startMetricsServer } from "./metrics/prom.js";
import { AlarmService } from "./metrics/alarm-service.js";
import type { AlarmEvent } from "./metrics/alarms.js";
import { DiagnosticsService } from "./metrics/diagnostics.js";
import type { isAction } from "./api/commands.js";
import { MigrationJournal } from "./migration/journal.js";
import { MigrationDestination } from "./migration/destination.js";
import { MigrationSource } from "./migration/source.js";
import { MigrationService } from "./migration/service.js";

export const AGENT_VERSION = "0.1.0";

export interface RunningAgent {
  readonly port: number;
  readonly hostId: string;
  readonly instances: InstanceOperations;
  readonly images: ImageCatalog;
  close(): Promise<void>;
}

export async function startAgent(options: { config: AgentConfig; logger: Logger; runner?: CommandRunner }): Promise<RunningAgent> {
  const { config, logger } = options;
  // Where the start-up goes (debug; the bench prints these beside the commands' times).
  const startupStep = (step: string) => logger.debug({ step, uptimeMs: Math.round(performance.now()) }, "start-up step");
  startupStep("modules loaded");
  const paths = new DataPaths(config.dataDir);
  await mkdir(paths.root, { recursive: true, mode: 0o711 });
  await chmod(paths.root, 0o711); // QEMU (user libvirt-qemu) must reach the disks below it
  await mkdir(paths.tmpDir, { recursive: true, mode: 0o700 });

  const runner = options.runner ?? new LocalRunner({ defaultTimeoutMs: 120_000, logger });
  await mkdir(paths.virshStateDir, { recursive: true, mode: 0o700 });
  const hypervisor = new VirshHypervisor({ runner, uri: config.libvirtUri, tmpDir: paths.tmpDir, stateDir: paths.virshStateDir, logger });
  const imageTool = new QemuImg({ runner });

  // What only the API's construction needs (its server, the command schemas, the dispatcher, the
  // consoles): loaded while start-up waits for libvirt, not before it (bench (b)).
  const apiModules = loadApiModules();
  apiModules.catch(() => undefined); // awaited below, where its failure stops the agent
  await waitForLibvirt(hypervisor, logger);
  startupStep("libvirt answers");
  // Independent of each other (libvirt round trips and host facts): side by side, all awaited here.
  const networks = new VirshNetworks({ runner, uri: config.libvirtUri, tmpDir: paths.tmpDir });
  // A network conflict (the first) is the failure shown when several fail.
  const [, virtType, , facts] = await allSettledOrThrow([
    (async () => {
      for (const subnet of config.subnets) {
        await networks.ensureIsolated({
          name: subnet.network,
          bridge: subnet.bridge,
          ip: { address: subnet.gateway, prefixLength: subnet.prefixLength },
        });
      }
    })(),
    chooseVirtType(config.virtType, hypervisor, logger),
    // QEMU binds each domain's VNC socket in this directory: it must be QEMU's before any domain starts.
    hypervisor.qemuProcessIds().then((ids) => prepareVncDir(paths.vncDir, ids)),
    getHostFacts({ dataDir: config.dataDir }),
  ] as const);
  startupStep("networks and host facts");
  const identity: HostIdentity = {
    hostId: config.hostId,
    hostName: facts.hostname,
    hostIp: facts.primaryIpv4,
    zone: config.hostZone,
    createdTime: isoSeconds(new Date()),
    hostType: "CDH_LIBVIRT",
  };
  // The name an owner gave the host (ModifyHostsAttribute), kept across restarts.
  const hostNames = new HostNameStore(join(config.dataDir, "host.json"));
  identity.hostName =
    (await hostNames.load((reason) => logger.warn({ file: join(config.dataDir, "host.json"), reason }, "host name file unreadable; set aside, the machine's hostname is shown"))) ??
    identity.hostName;

  // Fault injection for the crash tests (fail_point): the agent kills itself at the named point.
  const checkpoint = (point: string) => {
    if (config.failPoint !== point) return;
    logger.fatal({ point }, "fail point reached: killing the agent (crash test)");
    process.kill(process.pid, "SIGKILL");
  };
  const registry = new InstanceRegistry();
  const journal = new Journal(paths.journalDir);
  const usersOf = (imageId: string) => [...registry.all()].filter((e) => e.record.imageId === imageId).map((e) => e.record.instanceId);
  const images = new ImageCatalog({
    paths,
    imageTool,
    logger: logger.child({ component: "images" }),
    maxImageBytes: config.maxImageBytes,
    downloadTimeoutMs: config.imageDownloadTimeoutS * 1000,
    usersOf,
    // Every disk file whose backing chain may hold a base image. For now: every qcow2 under
    // the instances directory and the storage pools (the pool code will take this over).
    // Every qcow2 under the pools (disks, snapshots, quarantined orphans) and the old instance dirs.
    diskFiles: () => listQcow2Files([paths.instancesDir, ...config.storagePools.map((p) => p.path)]),
    sweepSchedule: config.imageCacheSweepSchedule,
    checkpoint,
  });
  const pools = new PoolSet(config.storagePools, config.reservedDiskGib * 1024 ** 3);
  await pools.load();
  const disks = new DiskStore(paths.disksDir, logger.child({ component: "disks" }));
  await disks.load();
  const storage = new Storage({
    pools,
    disks,
    registry,
    imageTool,
    runner,
    wipe: config.diskWipe,
    instanceOverheadGiB: config.instanceOverheadGib,
    imageCache: { dir: paths.imagesDir, bytes: () => images.cacheBytes() },
    logger: logger.child({ component: "storage" }),
  });
  const ioLimits = (pool: string | undefined) => {
    const p = pool === undefined ? undefined : pools.get(pool);
    return p ? { iops: p.iops, throughputMBps: p.throughputMBps } : undefined;
  };
  const hostResource = (): HostResource =>
    computeHostResource(
      { cpus: facts.cpuCount, memoryBytes: facts.memoryBytes, disk: storage.totals() },
      {
        reservedCpu: config.reservedCpu,
        reservedMemoryGiB: config.reservedMemoryGib,
        cpuAllocationRatio: config.cpuAllocationRatio,
        memoryAllocationRatio: config.memoryAllocationRatio,
      },
      [
        ...[...registry.all()].filter((e) => !e.launchFailed).map((e) => ({ cpu: e.record.cpu, memoryGiB: e.record.memoryGiB })),
        // Growth admitted for resizes under way (ResetInstancesType), not yet in a record.
        ...instances.retype.reservations(),
      ],
    );

  const keyPairs = new KeyPairStore({ file: keyPairsFile(paths), logger: logger.child({ component: "keypairs" }) });
  const sgLogger = logger.child({ component: "security-groups" });
  const sgStore = new SecurityGroupStore({ file: securityGroupsFile(paths.root), logger: sgLogger });
  const guests = new GuestDocumentsService({
    runner,
    hypervisor,
    paths,
    registry,
    keyPairs,
    host: {
      subnets: config.subnets,
      hostId: config.hostId,
      zone: config.hostZone,
      region: config.region,
      ntpServers: config.ntpServers,
      ...(config.bandwidthCaps ? { intranetRule: config.intranetRule } : {}),
    },
    logger: logger.child({ component: "guests" }),
    // Read once the store is loaded (below, before recovery and the metadata server).
    securityGroupsOf: (record) => namedGroupsOf(sgStore.state, record),
  });
  // Prometheus and the self-check (agent/metrics), made once the monitor runs; the hooks below read them late.
  let metrics: AgentMetrics | undefined;
  let diagnostics: DiagnosticsService | undefined;
  let guestFs: GuestFsCollector | undefined;
  const ops = new Operations({
    registry,
    records: hypervisor,
    codeOf: cvmCodeOf,
    logger: logger.child({ component: "instances" }),
    onFinished: (action, outcome) => metrics?.onOperation(action, outcome),
  });
  // Security groups and anti-spoofing: the agent's nftables tables (README "Security groups: enforcement").
  await ensureBridgeNetfilter({ runner });
  const firewall = new NftFirewall({ runner, table: config.firewallNftTable, metadataPort: config.metadataPort, logger: logger.child({ component: "firewall" }) });
  // Unattached ENIs (the attached ones are NICs in their records): agent/network/enis.
  const eniStore = new EniStore({ file: enisFile(paths.root), logger: logger.child({ component: "enis" }) });
  await eniStore.load();
  const securityGroups = new SecurityGroupService({
    store: sgStore,
    registry,
    subnets: config.subnets,
    firewall,
    ops,
    groupLimit: config.securityGroupLimit,
    unattachedEnisOf: (groupId) => eniStore.state.enis.filter((e) => e.net?.securityGroupIds.includes(groupId)).map((e) => e.eniId),
    logger: sgLogger,
  });
  await securityGroups.load();
  // NIC changes (ENIs, addresses, launches, terminations) reach DHCP and bandwidth caps here (agent/network/nic-events.ts).
  const nicEvents = new NicEvents((e, instanceId) => logger.error({ err: e, instanceId }, "a NIC change did not reach everything that follows it"));
  // Elastic network interfaces (the VPC ENI actions): README "Elastic network interfaces".
  // DHCP's chaddr table loaded with the firewall's sync before a hot-plug (set once DHCP exists, below).
  let dhcpGuard: (() => Promise<void>) | undefined;
  const enis = new EniService({
    store: eniStore,
    journal: new EniJournal(join(paths.root, "eni-journal")),
    registry,
    subnets: config.subnets,
    hypervisor,
    ops,
    firewall: {
      syncNow: async () => {
        await Promise.all([securityGroups.syncNow(), dhcpGuard?.()]);
      },
    },
    drives: guests,
    nicEvents,
    groups: {
      exists: (id) => sgStore.state.groups.some((g) => g.securityGroupId === id),
      get defaultGroupId() {
        return securityGroups.defaultGroupId;
      },
      replaceInstanceGroups: (groupIds, instanceId, ctx) => securityGroups.replaceGroups(groupIds, [instanceId], ctx),
    },
    dataDiskCount: (instanceId) => disks.attachedTo(instanceId).length,
    // Called only by requests, once `instances` (made below) exists.
    reservedAddresses: (subnetId) => instances.vpcAttribute.reserved(subnetId),
    zone: config.hostZone,
    detachTimeoutMs: config.nicDetachTimeoutS * 1000,
    checkpoint,
    logger: logger.child({ component: "enis" }),
  });
  // Per-NIC bandwidth and packet caps (README "Bandwidth and packet caps"): tc and an nftables table of the agent's.
  const bandwidth = new BandwidthCaps({
    runner,
    records: () => [...registry.all()].filter((e) => !e.launchFailed).map((e) => e.record),
    subnets: config.subnets,
    rule: config.intranetRule,
    table: `${config.firewallNftTable}_caps`,
    enabled: config.bandwidthCaps,
    logger: logger.child({ component: "bandwidth" }),
  });
  nicEvents.on(() => bandwidth.sync());
  const snapshots = new SnapshotService({
    dir: paths.snapshotsDir,
    disks,
    registry,
    storage,
    hypervisor,
    imageTool,
    exclusive: (id, work) => ops.exclusive(id, work),
    checkpoint,
    quiesceMarker: (id) => paths.quiesceMarker(id),
    logger: logger.child({ component: "snapshots" }),
  });
  storage.addFiles(() => snapshots.files());
  const diskService = new DiskService({
    disks,
    storage,
    registry,
    hypervisor,
    ioLimits,
    exclusive: (id, work) => ops.exclusive(id, work),
    onDiskDeleted: (diskId) => snapshots.dropForDisk(diskId),
    host: { hostId: config.hostId, zone: config.hostZone },
    logger: logger.child({ component: "disks" }),
  });
  // Domains start-up recovery found with NICs from before the firewall (nic-migration.ts).
  const nicMigrationCandidates = new Set<string>();
  const instances = createInstanceOperations({
    ops,
    registry,
    journal,
    paths,
    hypervisor,
    imageTool,
    images,
    storage,
    disks,
    keyPairs,
    drives: guests,
    snapshots,
    subnets: config.subnets,
    hostResource,
    hostId: config.hostId,
    virtType,
    agentVersion: AGENT_VERSION,
    ioLimits,
    rescue: { kernel: config.rescueKernel, initrd: config.rescueInitrd },
    ...(config.hotplugMaxVcpus > 0 || config.hotplugMaxMemoryGib > 0
      ? { hotplug: { maxVcpus: config.hotplugMaxVcpus, maxMemoryGiB: config.hotplugMaxMemoryGib, memorySlots: config.hotplugMemorySlots } }
      : {}),
    softStopTimeoutMs: config.softStopTimeoutS * 1000,
    softStopRetryMs: config.softStopRetryS * 1000,
    launchConcurrency: launchConcurrency(config.launchConcurrency, facts.cpuCount),
    powerRestore: { enabled: config.restorePowerOnStart, concurrency: config.restorePowerConcurrency },
    healDisks: (id, spec, state) => diskService.heal(id, spec, state),
    onAdopted: (id, spec) => {
      if (needsNicMigration(id, spec)) nicMigrationCandidates.add(id);
    },
    // A launch's NICs reach the firewall, DHCP and caps before its guest starts; a terminated instance's leave them.
    firewallHooks: {
      beforeStart: async (record) => {
        await securityGroups.syncNow();
        await nicEvents.emit(record.instanceId);
      },
      afterGone: async (id) => {
        await securityGroups.syncNow();
        await nicEvents.emit(id);
      },
    },
    nics: { addressesInUse: (subnetId) => enis.addressesInUse(subnetId), newEniId: () => enis.newPrimaryEniId(), beforeGone: (record) => enis.instanceGone(record) },
    checkpoint,
    logger: logger.child({ component: "instances" }),
  });
  storage.addFiles(() => instances.reinstall.pendingResets.values());
  const sync = new InstanceSync({
    hypervisor,
    registry,
    logger: logger.child({ component: "sync" }),
    reconcileIntervalMs: config.reconcileIntervalS * 1000,
    probeIntervalMs: config.libvirtProbeIntervalS * 1000,
    probeTimeoutMs: config.libvirtProbeTimeoutS * 1000,
    ...(config.libvirtUri === "qemu:///system"
      ? { qemuWatch: new QemuWatch({ registry, logger: logger.child({ component: "qemu-watch" }), pidFile: (domain) => `/run/libvirt/qemu/${domain}.pid` }) }
      : {}),
    onOffWithoutOperation: (id) => instances.intents.offWithoutOperation(id),
    onEvent: (event) => {
      metrics?.onEvent(event.at);
      diagnostics?.onEvent(event);
      guestFs?.onEvent(event);
    },
  });

  // Migration (agent/migration): both roles; its journal is settled before the instance recovery.
  for (const p of config.migrationPeers) addSecret(p.secretKey);
  const migrationJournal = new MigrationJournal(join(config.dataDir, "migrations"));
  const migrationLog = logger.child({ component: "migration" });
  const migration = new MigrationService({
    source: new MigrationSource({
      hostId: config.hostId,
      peers: config.migrationPeers,
      ops,
      registry,
      journal: migrationJournal,
      hypervisor,
      imageTool,
      storage,
      disks,
      paths,
      runner,
      libvirtUri: config.libvirtUri,
      firewallSync: () => securityGroups.syncNow(),
      defaultGroupId: () => securityGroups.defaultGroupId,
      nicChanged: (id) => nicEvents.emit(id),
      softStopTimeoutMs: config.softStopTimeoutS * 1000,
      checkpoint,
      logger: migrationLog,
    }),
    destination: new MigrationDestination({
      hostId: config.hostId,
      registry,
      journal: migrationJournal,
      hypervisor,
      specs: instances.specs,
      drives: guests,
      storage,
      pools,
      imageTool,
      disks,
      paths,
      subnets: config.subnets,
      hostResource,
      defaultGroupId: () => securityGroups.defaultGroupId,
      groupExists: (id) => sgStore.state.groups.some((g) => g.securityGroupId === id),
      firewallSync: () => securityGroups.syncNow(),
      nicChanged: (id) => nicEvents.emit(id),
      runner,
      ...(config.migrationAddress ? { migrationAddress: config.migrationAddress } : {}),
      checkpoint,
      logger: migrationLog,
    }),
    journal: migrationJournal,
    registry,
    hypervisor,
    logger: migrationLog,
  });

  startupStep("stores loaded");
  await images.load();
  images.start();
  await migration.recover();
  startupStep("images and migrations");
  await instances.recovery.run();
  startupStep("instances recovered");
  // ENI changes a crash interrupted: finished (or undone) before the firewall's resync below.
  const eniTouched = await enis.recover();
  migration.afterRecovery();
  await snapshots.load();
  // What the pools' files take (a stat of each, on libuv's threads): started before the firewall's
  // compile takes the main thread, awaited before the API admits anything.
  const measured = storage.measure();
  measured.catch(() => undefined);
  // The whole ruleset from the recovered instances, replacing whatever the tables held (one
  // transaction), before the API can start anything. Without it guests would run unfiltered.
  // It runs beside the start-up steps below that start no guest; awaited before the power restore and the API.
  const firewallReady = securityGroups.resync();
  firewallReady.catch(() => undefined); // its failure stops the agent (awaited once the API serves)
  // The API answers from the registry meanwhile; a guest starts only once its rules are in the kernel.
  hypervisor.holdStartsUntil(firewallReady);
  // DHCP with fixed leases, one per NIC (agent/network/dhcp, README "DHCP"): after recovery, so
  // every NIC the agent holds has its lease; NIC changes, launches and terminations re-render it.
  const dhcp = new DhcpService({
    runner,
    dir: join(paths.root, "dhcp"),
    subnets: config.dhcpEnabled ? config.subnets.filter((s) => s.dhcp !== false) : [],
    leaseTimeS: config.dhcpLeaseTimeS,
    nftTable: `${config.firewallNftTable}_dhcp`,
    records: () => [...registry.all()].filter((e) => !e.launchFailed).map((e) => e.record),
    logger: logger.child({ component: "dhcp" }),
  });
  // Not awaited: it runs beside the start-up steps below; every sync queues behind it.
  dhcp.start().catch((e: unknown) => logger.error({ err: e }, "DHCP: could not start; the guests' leases are not served"));
  nicEvents.on(() => dhcp.sync());
  dhcpGuard = () => dhcp.guardNow();
  // Every change (a launch failing takes its lease too); a pass that changes nothing writes nothing.
  registry.subscribe(() => {
    dhcp.sync().catch((e: unknown) => logger.error({ err: e }, "DHCP: could not bring the leases up to date"));
  });
  // Domains defined before the firewall (clean-traffic, libvirt's vnetN taps): redefined with fixed tap names.
  await migrateNicDefinitions({
    hypervisor,
    candidates: nicMigrationCandidates,
    instances: () => [...registry.all()].filter((e) => !e.launchFailed && !e.transition).map((e) => e.record),
    specOf: (record) => instances.specs.of(record),
    exclusive: (id, work) => ops.exclusive(id, work),
    logger: logger.child({ component: "firewall" }),
  }).catch((e: unknown) => logger.warn({ err: e }, "could not check the domains' NICs for the firewall"));
  // After a libvirtd restart (the event stream back): replace the tables whole again.
  registry.subscribe((reason) => {
    if (reason !== "libvirt reachable") return;
    firewall.forget();
    securityGroups.resync().catch((e: unknown) => logger.error({ err: e }, "could not rebuild the firewall after libvirtd came back"));
  });
  // Caps on every tap there is, then on every tap that appears or changes (a domain start, a
  // hot-plug, a record change), and all again after libvirtd came back. The first pass (one nft
  // transaction, tc per tap) is asked for once the API listens and the firewall is in (below);
  // the caps of guests that already run catch up with it, and a guest the agent starts gets its
  // caps from the pass its start asks for (beforeStart's NIC event, the registry change).
  registry.subscribe((reason) => {
    if (reason === "libvirt reachable") bandwidth.forget();
    bandwidth.request();
  });
  bandwidth.start(config.reconcileIntervalS * 1000);
  startupStep("firewall, DHCP and caps under way");
  sync.start();
  const inventory = new InventorySweep({
    storage,
    registry,
    hypervisor,
    paths,
    hostId: config.hostId,
    graceMs: config.orphanGracePeriodS * 1000,
    firewallStrays: () => firewall.strays(securityGroups.firewallState()),
    logger: logger.child({ component: "inventory" }),
  });
  const inventoryTask = createTask(
    config.inventorySweepSchedule,
    () => inventory.sweep().catch((e: unknown) => logger.warn({ err: e }, "inventory sweep failed")),
    { name: "cdh-agent-inventory" },
  );
  void inventoryTask.start();
  const measureTimer = setInterval(() => {
    storage.measure().catch((e: unknown) => logger.warn({ err: e }, "could not measure the storage pools"));
  }, 30_000);
  measureTimer.unref();
  // The metadata endpoint comes up beside the API's start (awaited once the API serves).
  const metadataReady = guests.warm().then(() => startMetadata({ config, runner, guests, logger, onAnswered: (target, status) => metrics?.onMetadataRequest(target, status) }));
  metadataReady.catch(() => undefined);
  // Instances that ran before the host (or libvirtd and the agent) went down start again; they show STARTING from here
  // (their domains start once the firewall is loaded: holdStartsUntil above).
  const powerRestored = instances.powerRestore.begin(instances.recovery.resumedFromJournal);

  startupStep("event stream, metadata, power restore under way");
  const monitor = startMonitor({ config, runner, registry, logger, guestAgent: (id, command, timeoutS) => hypervisor.guestAgent(id, command, timeoutS) });
  guestFs = monitor.guestFs;
  let reporter: Reporter | undefined;
  const alarms = new AlarmService({
    monitor: monitor.reader,
    configRules: config.alarmRules,
    file: join(config.dataDir, "alarm-policies.json"),
    onEvent: (e) => metrics?.onAlarm(e),
    wantReport: () => reporter?.trigger("alarm"),
    logger: logger.child({ component: "alarms" }),
  });
  diagnostics = new DiagnosticsService({
    monitor: monitor.reader,
    intervalMs: config.monitorIntervalS * 1000,
    stateOf: (id) => {
      const entry = registry.get(id);
      return entry ? registry.stateOf(entry) : undefined;
    },
    consoleLogPath: (id) => paths.consoleLog(id),
    runner,
    uri: config.libvirtUri,
  });
  const { createApiServer, createDispatcher, createConsoles, serialRoute, isAction } = await apiModules;
  metrics = new AgentMetrics({
    monitor: monitor.reader,
    isAction,
    journalDir: paths.journalDir,
    reporter: () => reporter?.stats() ?? { built: 0, sent: 0, failedAttempts: 0, superseded: 0, lastSentSequence: null, lastError: null },
    alarmsFiring: () => alarms.engine.firing().length,
    host: () => {
      let cpu = 0;
      let memoryGiB = 0;
      for (const e of registry.all()) {
        if (e.launchFailed) continue;
        cpu += e.record.cpu;
        memoryGiB += e.record.memoryGiB;
      }
      const usage = storage.usage();
      return {
        resource: hostResource(),
        committed: { cpu, memoryGiB, diskGiB: usage.reduce((a, u) => a + u.promisedBytes, 0) / 1024 ** 3 },
        diskUsedGiB: usage.reduce((a, u) => a + u.usedBytes, 0) / 1024 ** 3,
      };
    },
  });
  const metricsServer = config.metricsListen ? await startMetricsServer(metrics, config.metricsListen) : undefined;
  if (metricsServer) logger.info({ listen: `${config.metricsListen!.host}:${metricsServer.port}` }, "Prometheus metrics at /metrics");
  startupStep("monitor and metrics");
  const credentials = config.credentials.length ? config.credentials : await generatedCredentials(paths, logger);
  for (const c of credentials) addSecret(c.secretKey); // scrubbed from every log line (sanitize.ts)
  // The consoles (agent/console): one-time URLs, the WebSocket bridge, the noVNC page, on the API listener.
  const consoles = createConsoles({
    registry,
    vncSocket: (id) => paths.vncSocket(id),
    tls: config.apiTls !== undefined,
    ...(config.consoleUrlBase !== undefined ? { urlBase: config.consoleUrlBase } : {}),
    extraOrigins: config.consoleAllowedOrigins,
    logger: logger.child({ component: "console" }),
  });
  consoles.gateway.route(
    serialRoute({
      socketPath: (id) => paths.serialSocket(id),
      consoleLogPath: (id) => paths.consoleLog(id),
      unavailable: (id) => consoles.access.unavailable(id),
      logger: logger.child({ component: "console" }),
    }),
  );
  for (const id of eniTouched) await nicEvents.emit(id);
  const dispatch = createDispatcher({
    consoles: consoles.access,
    instances,
    images,
    registry,
    identity,
    hostNames,
    hostResource,
    keyPairs,
    disks,
    diskService,
    snapshots,
    securityGroups,
    enis,
    monitor: monitor.reader,
    alarms,
    diagnostics,
    paths,
    maxIsoBytes: config.maxImageBytes,
    downloadTimeoutMs: config.imageDownloadTimeoutS * 1000,
    libvirtConnected: () => registry.isConnected(),
    migration,
    resetInternetMaxBandwidth: (ids, mbps) => resetInternetMaxBandwidth({ ops, registry, caps: bandwidth }, ids, mbps),
  });
  const api = createApiServer({
    listen: config.apiListen,
    credentials,
    dispatch,
    logger: logger.child({ component: "api" }),
    onAnswered: (action, code, durationMs) => metrics?.onApiRequest(action, code, durationMs),
    sideRoutes: consoles.sideRoutes,
    ...(config.apiTls ? { tls: config.apiTls } : {}),
    limits: {
      maxConnections: config.apiMaxConnections,
      maxConnectionsPerSource: config.apiMaxConnectionsPerSource,
      unverifiedBodyBudgetBytes: config.apiUnverifiedBodyBudgetBytes,
    },
  });
  startupStep("API built");
  await measured;
  startupStep("storage measured");
  const { port } = await api.listen();
  // SIGHUP reloads the API's TLS files (open connections keep theirs).
  const onHangup = () => {
    try {
      if (api.reloadTls()) logger.info({ cert: config.apiTls?.certFile }, "API TLS certificate reloaded");
      else logger.info("SIGHUP: the API has no TLS to reload");
    } catch (error) {
      logger.error({ err: error }, "could not reload the API TLS files; the previous certificate stays");
    }
  };
  process.on("SIGHUP", onHangup);
  logger.info({ listen: `${config.apiListen.host}:${port}`, virtType }, "cdh-agent is serving");
  // Loaded beside the API's start; a failure of either still stops the agent.
  const metadata = await metadataReady;
  await firewallReady;
  // The caps' first pass: after the firewall's ruleset is in (two large nft transactions at once slow each other down).
  bandwidth.request();

  reporter = new Reporter({
    controllerUrl: config.controllerUrl,
    schedule: config.reportSchedule,
    timeoutMs: config.reportTimeoutMs,
    hostId: config.hostId,
    epoch: randomUUID(),
    logger: logger.child({ component: "reporter" }),
    snapshot: () => ({
      HostResource: { ...hostResource() },
      Instances: [...registry.all()].map((e) =>
        toCvmInstance(e, registry.stateOf(e), { hostId: config.hostId, zone: config.hostZone, defaultSecurityGroupId: securityGroups.defaultGroupId }, disks.attachedTo(e.record.instanceId)),
      ),
      StoragePools: storage.usage().map((u) => ({
        Name: u.name,
        DiskType: u.diskType,
        TotalGiB: Math.floor(u.capacityBytes / 1024 ** 3),
        AvailableGiB: Math.floor(u.availableBytes / 1024 ** 3),
        PromisedGiB: Math.ceil(u.promisedBytes / 1024 ** 3),
        UsedBytes: u.usedBytes,
        ImageCacheBytes: u.cacheBytes,
      })),
      ...(instances.powerRestore.lastResult() ? { PowerRestore: powerRestoreView(instances.powerRestore.lastResult()!) } : {}),
      // Alarm events not yet delivered (README "Alarms"); dropped once a report carrying them got through.
      ...(alarms.forReport().length ? { Alarms: alarms.forReport().map((e) => ({ ...e })) } : {}),
      Orphans: [
        ...inventory.lastResult().quarantined.map((o) => ({ Kind: o.kind, Name: o.name, FoundAt: o.foundAt, DeleteAfter: o.deleteAfter })),
        ...inventory.lastResult().firewallStrays.map((name) => ({ Kind: "firewall", Name: name })),
      ],
    }),
    onDelivered: (report) => alarms.delivered(report.Alarms as AlarmEvent[] | undefined),
  });
  const reporterNow = reporter;
  registry.subscribe((reason) => reporterNow.trigger(reason));
  reporter.start();
  void powerRestored.then((r) => {
    if (r.restarted.length) reporterNow.trigger(`power restore: ${r.restarted.filter((x) => x.result === "SUCCESS").length} of ${r.restarted.length} instances started again`);
  });

  return {
    port,
    hostId: config.hostId,
    instances,
    images,
    async close() {
      reporterNow.stop();
      migration.stop();
      sync.stop();
      await bandwidth.stop();
      clearInterval(measureTimer);
      alarms.stop();
      diagnostics?.stop();
      await metricsServer?.close();
      await monitor.stop();
      void inventoryTask.stop();
      await images.stop();
      process.off("SIGHUP", onHangup);
      await api.close();
      await metadata?.close();
      await dhcp.close();
      await runner.close();
    },
  };
}

/**
 * The host monitor (agent/monitor): one bulk `virsh domstats --nowait` every
 * monitor_interval_s into the series store under monitor_dir; the series of instances gone
 * for longer than the longest retention are swept every six hours.
 */
function startMonitor(o: {
  config: AgentConfig;
  runner: CommandRunner;
  registry: InstanceRegistry;
  logger: Logger;
  guestAgent: (instanceId: string, command: Record<string, unknown>, timeoutS: number) => Promise<unknown>;
}): { reader: HostMonitor; guestFs: GuestFsCollector | undefined; stop(): Promise<void> } {
  const { config } = o;
  const retentionS: Partial<Record<Period, number>> = {};
  for (const p of PERIODS) {
    const days = config.monitorRetentionDays[String(p) as keyof AgentConfig["monitorRetentionDays"]];
    if (days !== undefined) retentionS[p] = Math.round(days * 86_400);
  }
  const store = new SeriesStore({ dir: config.monitorDir, retentionS });
  const log = o.logger.child({ component: "monitor" });
  // The guests' filesystems through their agents, at their own slower interval (agent/monitor/guest-fs.ts).
  const guestFs =
    config.monitorGuestFsIntervalS > 0
      ? new GuestFsCollector({
          query: (id, timeoutS) => o.guestAgent(id, { execute: "guest-get-fsinfo" }, timeoutS),
          // A paused guest (RUNNING in the API's view) cannot answer its agent: not asked (bench (m): 200 paused domains cost a failed `virsh` each).
          running: () => [...o.registry.all()].filter((e) => e.power === "running" && o.registry.stateOf(e) === "RUNNING").map((e) => e.record.instanceId),
          intervalMs: config.monitorGuestFsIntervalS * 1000,
          logger: log,
        })
      : undefined;
  const monitor = new HostMonitor({
    runner: o.runner,
    uri: config.libvirtUri,
    // One virsh shell kept for the bulk call: a process and a libvirt connection per sample were most of its cost (bench (m)).
    session: new VirshSession({ runner: o.runner, uri: config.libvirtUri }),
    store,
    intervalMs: config.monitorIntervalS * 1000,
    instanceIds: () => new Set([...o.registry.all()].map((e) => e.record.instanceId)),
    ...(guestFs ? { fill: (id: string, values: Float64Array) => guestFs.fill(id, values) } : {}),
    logger: log,
  });
  monitor.start();
  guestFs?.start();
  const longest = Math.max(...PERIODS.map((p) => store.layout(p).slots * p));
  const sweep = () => {
    try {
      const removed = store.sweep(new Set([...o.registry.all()].map((e) => e.record.instanceId)), longest);
      if (removed.length) log.info({ removed }, "monitor: series of instances gone past their retention removed");
    } catch (error) {
      log.warn({ err: error }, "monitor: the series sweep failed");
    }
  };
  const sweepTimer = setInterval(sweep, 6 * 3600_000);
  sweepTimer.unref();
  return {
    reader: monitor,
    guestFs,
    async stop() {
      clearInterval(sweepTimer);
      await guestFs?.stop();
      await monitor.stop();
      store.close();
    },
  };
}

/**
 * The metadata endpoint: one listener per subnet gateway, and the nftables redirect
 * that brings guests' 169.254.169.254:80 and 169.254.0.23:80 there. Without nftables
 * guests still have their config drive; the agent says so and goes on.
 */
async function startMetadata(o: {
  config: AgentConfig;
  runner: CommandRunner;
  guests: GuestDocumentsService;
  logger: Logger;
  onAnswered?: (target: string, status: number) => void;
}): Promise<MetadataServer | undefined> {
  const { config, logger } = o;
  const server = createMetadataServer({
    listen: config.subnets.map((s) => ({ host: s.gateway, port: config.metadataPort })),
    resolve: (local, remote) => o.guests.resolve(local, remote),
    logger,
    requireToken: config.metadataRequireToken,
    maxConnections: config.metadataMaxConnections,
    maxConnectionsPerSource: config.metadataMaxConnectionsPerSource,
    maxTokens: config.metadataMaxTokens,
    ...(o.onAnswered ? { onAnswered: o.onAnswered } : {}),
  });
  try {
    await server.listen();
  } catch (error) {
    logger.error({ err: error }, "the metadata endpoint could not listen; guests rely on their config drive");
    return undefined;
  }
  try {
    await ensureMetadataRedirect({
      runner: o.runner,
      bridges: config.subnets.map((s) => ({ bridge: s.bridge, gateway: s.gateway })),
      port: config.metadataPort,
      table: config.metadataNftTable,
    });
  } catch (error) {
    logger.error({ err: error }, "could not install the metadata redirect (nftables); guests rely on their config drive");
  }
  return server;
}

/** The API's modules, loaded on demand (see startAgent). */
async function loadApiModules(): Promise<{
  createApiServer: typeof createApiServer;
  createDispatcher: typeof createDispatcher;
  createConsoles: typeof createConsoles;
  serialRoute: typeof serialRoute;
  isAction: typeof isAction;
}> {
  const [server, dispatch, consoles, serial, commands] = await Promise.all([
    import("./api/server.js"),
    import("./dispatch.js"),
    import("./console/index.js"),
    import("./console/serial.js"),
    import("./api/commands.js"),
  ]);
  return {
    createApiServer: server.createApiServer,
    createDispatcher: dispatch.createDispatcher,
    createConsoles: consoles.createConsoles,
    serialRoute: serial.serialRoute,
    isAction: commands.isAction,
  };
}

/**
 * Awaits every promise (so none is left running unobserved) and throws the first failure,
 * in the order given; otherwise the values, in that order.
 */
async function allSettledOrThrow<T extends readonly unknown[]>(promises: { readonly [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const settled = await Promise.allSettled(promises);
  for (const r of settled) if (r.status === "rejected") throw r.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

async function waitForLibvirt(hypervisor: VirshHypervisor, logger: Logger): Promise<void> {
  for (let attempt = 1; attempt <= 30; attempt++) {
    if (await hypervisor.ping()) return;
    if (attempt === 1) logger.warn("libvirtd does not answer yet; waiting up to 30 s");
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error("libvirtd did not answer within 30 s");
}

async function chooseVirtType(wanted: "kvm" | "qemu" | "auto", hypervisor: VirshHypervisor, logger: Logger): Promise<VirtType> {
  if (wanted !== "auto") return wanted;
  const { kvmUsable } = await hypervisor.capabilities();
  if (kvmUsable) return "kvm";
  logger.warn("/dev/kvm is not usable: guests run under TCG emulation (virt_type qemu), which is slow");
  return "qemu";
}

/**
 * Without configured credentials the agent makes one pair, keeps it (root only) and says
 * where. A file it cannot read or parse stops the agent and is never overwritten.
 */
async function generatedCredentials(paths: DataPaths, logger: Logger): Promise<Credential[]> {
  const { credential, created } = await loadOrCreateCredentials(paths.credentialsFile);
  if (created) logger.warn({ file: paths.credentialsFile }, "no API credentials configured; generated a pair into this file (root only)");
  return [credential];
}
