/*
 * fakenvfm: a stand-in for NVIDIA's libnvfm.so, for tests/fabric/test_libnvfm.py.
 *
 * It exports the nine fm* calls gpucaas.fabric.NvfmLibrary binds, with the structs of the
 * published nv_fm_types.h written out here independently (field names, order and array
 * bounds as published; the layout is checked below with _Static_assert), and answers them
 * from an in-memory HGX H100 8-GPU partition table with Fabric Manager's shared-NVSwitch
 * semantics:
 *
 *   - activating an active or overlapping partition          -> FM_ST_IN_USE (-7)
 *   - deactivating an inactive partition                     -> FM_ST_UNINITIALIZED (-4)
 *   - an unknown partition id                                -> FM_ST_BADPARAM (-1)
 *   - fmSetActivatedFabricPartitions replaces the active set
 *   - a struct whose version stamp is not sizeof | ver << 24 -> FM_ST_VERSION_MISMATCH (-6)
 *   - set-activated ids that overlap each other                -> FM_ST_IN_USE (-7)
 *   - after fake_restart(), activate/deactivate get FM_ST_NOT_CONFIGURED (-8) until the
 *     active set is replayed, as with FM started with --restart (listing still works, as
 *     in gpucaas.fabric.SimulatedFabric)
 *
 * The fake_* functions are test hooks: they record what the caller passed (connect params,
 * version stamps), inject return codes, and report the C view of sizeof/offsetof so the
 * Python ctypes layout can be compared with a C compiler's.
 *
 * Not thread-safe; pytest drives it from one thread.
 */

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ---- the published ABI (nv_fm_types.h / nv_fm_agent.h), written out independently ---- */

typedef enum fake_fm_return {
    FM_ST_SUCCESS = 0,
    FM_ST_BADPARAM = -1,
    FM_ST_GENERIC_ERROR = -2,
    FM_ST_NOT_SUPPORTED = -3,
    FM_ST_UNINITIALIZED = -4,
    FM_ST_TIMEOUT = -5,
    FM_ST_VERSION_MISMATCH = -6,
    FM_ST_IN_USE = -7,
    FM_ST_NOT_CONFIGURED = -8,
    FM_ST_CONNECTION_NOT_VALID = -9,
} fmReturn_t;

typedef void *fmHandle_t;
typedef unsigned int fmFabricPartitionId_t;

#define FM_MAX_STR_LENGTH 256
#define FM_UUID_BUFFER_SIZE 80
#define FM_DEVICE_PCI_BUS_ID_BUFFER_SIZE 32
#define FM_MAX_NUM_GPUS 16
#define FM_MAX_NUM_NVSWITCHES 12
#define FM_MAX_FABRIC_PARTITIONS 64
#define FM_MAX_NUM_NVLINK_PORTS 64

#define STAMP(type, ver) ((unsigned int)(sizeof(type) | ((unsigned int)(ver) << 24)))

enum fake_addr_type {
    ADDR_UNKNOWN = 0,
    ADDR_INET = 1,
    ADDR_UNIX = 2,
    ADDR_VSOCK = 3,
};

typedef struct {
    unsigned int version;
    char addressInfo[FM_MAX_STR_LENGTH];
    unsigned int timeoutMs;
    unsigned int addressIsUnixSocket;
    enum fake_addr_type addressType;
} fmConnectParams_v2;

typedef struct {
    unsigned int physicalId;
    char uuid[FM_UUID_BUFFER_SIZE];
    char pciBusId[FM_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
    unsigned int numNvLinksAvailable;
    unsigned int maxNumNvLinks;
    unsigned int nvlinkLineRateMBps;
} fmFabricPartitionGpuInfo_t;

typedef struct {
    fmFabricPartitionId_t partitionId;
    unsigned int isActive;
    unsigned int numGpus;
    fmFabricPartitionGpuInfo_t gpuInfo[FM_MAX_NUM_GPUS];
} fmFabricPartitionInfo_t;

typedef struct {
    unsigned int version;
    unsigned int numPartitions;
    unsigned int maxNumPartitions;
    fmFabricPartitionInfo_t partitionInfo[FM_MAX_FABRIC_PARTITIONS];
} fmFabricPartitionList_v2;

typedef struct {
    unsigned int version;
    unsigned int numPartitions;
    fmFabricPartitionId_t partitionIds[FM_MAX_FABRIC_PARTITIONS];
} fmActivatedFabricPartitionList_v1;

typedef struct {
    char uuid[FM_UUID_BUFFER_SIZE];
    char pciBusId[FM_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
    unsigned int numPorts;
    unsigned int portNum[FM_MAX_NUM_NVLINK_PORTS];
} fmNvlinkFailedDeviceInfo_t;

typedef struct {
    unsigned int version;
    unsigned int numGpus;
    unsigned int numSwitches;
    fmNvlinkFailedDeviceInfo_t gpuInfo[FM_MAX_NUM_GPUS];
    fmNvlinkFailedDeviceInfo_t switchInfo[FM_MAX_NUM_NVSWITCHES];
} fmNvlinkFailedDevices_v1;

/* The published x86-64 sizes; a compiler that disagrees fails the build. */
_Static_assert(sizeof(fmConnectParams_v2) == 272, "fmConnectParams_v2");
_Static_assert(sizeof(fmFabricPartitionGpuInfo_t) == 128, "fmFabricPartitionGpuInfo_t");
_Static_assert(sizeof(fmFabricPartitionInfo_t) == 2060, "fmFabricPartitionInfo_t");
_Static_assert(sizeof(fmFabricPartitionList_v2) == 131852, "fmFabricPartitionList_v2");
_Static_assert(sizeof(fmActivatedFabricPartitionList_v1) == 264, "fmActivatedList_v1");
_Static_assert(sizeof(fmNvlinkFailedDeviceInfo_t) == 372, "fmNvlinkFailedDeviceInfo_t");
_Static_assert(sizeof(fmNvlinkFailedDevices_v1) == 10428, "fmNvlinkFailedDevices_v1");

/* Versions as the header defines them: note the partition list _v2 carries version 1. */
#define CONNECT_PARAMS_VERSION STAMP(fmConnectParams_v2, 2)
#define PARTITION_LIST_VERSION STAMP(fmFabricPartitionList_v2, 1)
#define ACTIVATED_LIST_VERSION STAMP(fmActivatedFabricPartitionList_v1, 1)
#define FAILED_DEVICES_VERSION STAMP(fmNvlinkFailedDevices_v1, 1)

/* ---- in-memory state: FM's default HGX H100/H200 table ---- */

#define NUM_PARTITIONS 15
#define NUM_MODULES 8
#define MAX_HANDLES 8
#define NVLINKS_PER_GPU 18
#define LINE_RATE_MBPS 50000

static const struct {
    unsigned int id;
    unsigned int num_gpus;
    unsigned int modules[NUM_MODULES];
} TABLE[NUM_PARTITIONS] = {
    {0, 8, {1, 2, 3, 4, 5, 6, 7, 8}},
    {1, 4, {1, 2, 3, 4}},
    {2, 4, {5, 6, 7, 8}},
    {3, 2, {1, 3}},
    {4, 2, {2, 4}},
    {5, 2, {5, 7}},
    {6, 2, {6, 8}},
    {7, 1, {1}},
    {8, 1, {2}},
    {9, 1, {3}},
    {10, 1, {4}},
    {11, 1, {5}},
    {12, 1, {6}},
    {13, 1, {7}},
    {14, 1, {8}},
};

/* PCI order does not follow module ID (FACTS.md: modules 1-4 on buses c3, df, d1, 9d). */
static const char *const BUS_OF_MODULE[NUM_MODULES + 1] = {
    "", "00000000:C3:00.0", "00000000:DF:00.0", "00000000:D1:00.0", "00000000:9D:00.0",
    "00000000:1B:00.0", "00000000:43:00.0", "00000000:52:00.0", "00000000:61:00.0",
};

static int initialised;
static int restart_pending;
static int active[NUM_PARTITIONS];
static char handles[MAX_HANDLES]; /* a handle is the address of one of these */
static int handle_open[MAX_HANDLES];

static int init_calls, shutdown_calls, connect_calls, disconnect_calls;
static char last_address[FM_MAX_STR_LENGTH + 1];
static int last_address_type = -1;
static unsigned int last_timeout_ms, last_unix_flag;
static unsigned int last_stamp;
static char last_stamp_function[64];

static char fail_function[64];
static int fail_code;
static int fail_armed;

static long bogus_partition_count = -1;
static long bogus_gpu_count = -1;

static struct {
    int used;
    char uuid[FM_UUID_BUFFER_SIZE];
    char bus[FM_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
    unsigned int num_ports;
    unsigned int ports[FM_MAX_NUM_NVLINK_PORTS];
} failed[2][FM_MAX_NUM_GPUS]; /* [0] GPUs, [1] NVSwitches */

static int injected(const char *function, fmReturn_t *code)
{
    if (!fail_armed || strcmp(fail_function, function) != 0)
        return 0;
    fail_armed = 0;
    *code = (fmReturn_t)fail_code;
    return 1;
}

static void record_stamp(const char *function, unsigned int stamp)
{
    last_stamp = stamp;
    snprintf(last_stamp_function, sizeof last_stamp_function, "%s", function);
}

static int handle_valid(fmHandle_t handle)
{
    for (int i = 0; i < MAX_HANDLES; i++)
        if (handle == (fmHandle_t)&handles[i])
            return handle_open[i];
    return 0;
}

static int index_of(fmFabricPartitionId_t id)
{
    for (int i = 0; i < NUM_PARTITIONS; i++)
        if (TABLE[i].id == id)
            return i;
    return -1;
}

static int overlaps(int a, int b)
{
    for (unsigned int i = 0; i < TABLE[a].num_gpus; i++)
        for (unsigned int j = 0; j < TABLE[b].num_gpus; j++)
            if (TABLE[a].modules[i] == TABLE[b].modules[j])
                return 1;
    return 0;
}

/* The checks every partition call shares, in the order libnvfm documents them. */
static fmReturn_t precheck(const char *function, fmHandle_t handle)
{
    fmReturn_t code;
    if (injected(function, &code))
        return code;
    if (!initialised)
        return FM_ST_UNINITIALIZED;
    if (!handle_valid(handle))
        return FM_ST_BADPARAM;
    return FM_ST_SUCCESS;
}

/* ---- the libnvfm API ---- */

fmReturn_t fmLibInit(void)
{
    fmReturn_t code;
    init_calls++;
    if (injected("fmLibInit", &code))
        return code;
    if (initialised)
        return FM_ST_IN_USE;
    initialised = 1;
    return FM_ST_SUCCESS;
}

fmReturn_t fmLibShutdown(void)
{
    fmReturn_t code;
    shutdown_calls++;
    if (injected("fmLibShutdown", &code))
        return code;
    if (!initialised)
        return FM_ST_UNINITIALIZED;
    initialised = 0;
    memset(handle_open, 0, sizeof handle_open); /* shutdown closes every connection */
    return FM_ST_SUCCESS;
}

fmReturn_t fmConnect(fmConnectParams_v2 *params, fmHandle_t *handle)
{
    fmReturn_t code;
    connect_calls++;
    if (params == NULL || handle == NULL)
        return FM_ST_BADPARAM;
    record_stamp("fmConnect", params->version);
    memcpy(last_address, params->addressInfo, FM_MAX_STR_LENGTH);
    last_address[FM_MAX_STR_LENGTH] = '\0';
    last_address_type = (int)params->addressType;
    last_timeout_ms = params->timeoutMs;
    last_unix_flag = params->addressIsUnixSocket;
    if (injected("fmConnect", &code))
        return code;
    if (params->timeoutMs == 0)
        return FM_ST_BADPARAM;
    if (params->version != CONNECT_PARAMS_VERSION)
        return FM_ST_VERSION_MISMATCH;
    if (!initialised)
        return FM_ST_UNINITIALIZED;
    if (memchr(params->addressInfo, '\0', FM_MAX_STR_LENGTH) == NULL)
        return FM_ST_BADPARAM;
    if (params->addressType < ADDR_INET || params->addressType > ADDR_VSOCK)
        return FM_ST_BADPARAM;
    for (int i = 0; i < MAX_HANDLES; i++) {
        if (!handle_open[i]) {
            handle_open[i] = 1;
            *handle = (fmHandle_t)&handles[i];
            return FM_ST_SUCCESS;
        }
    }
    return FM_ST_CONNECTION_NOT_VALID;
}

fmReturn_t fmDisconnect(fmHandle_t handle)
{
    fmReturn_t code;
    disconnect_calls++;
    if ((code = precheck("fmDisconnect", handle)) != FM_ST_SUCCESS)
        return code;
    for (int i = 0; i < MAX_HANDLES; i++)
        if (handle == (fmHandle_t)&handles[i])
            handle_open[i] = 0;
    return FM_ST_SUCCESS;
}

fmReturn_t fmGetSupportedFabricPartitions(fmHandle_t handle, fmFabricPartitionList_v2 *list)
{
    fmReturn_t code;
    if ((code = precheck("fmGetSupportedFabricPartitions", handle)) != FM_ST_SUCCESS)
        return code;
    if (list == NULL)
        return FM_ST_BADPARAM;
    record_stamp("fmGetSupportedFabricPartitions", list->version);
    if (list->version != PARTITION_LIST_VERSION)
        return FM_ST_VERSION_MISMATCH;

    unsigned int version = list->version;
    memset(list, 0, sizeof *list);
    list->version = version;
    list->numPartitions = NUM_PARTITIONS;
    list->maxNumPartitions = FM_MAX_FABRIC_PARTITIONS;
    for (int p = 0; p < NUM_PARTITIONS; p++) {
        fmFabricPartitionInfo_t *info = &list->partitionInfo[p];
        info->partitionId = TABLE[p].id;
        info->isActive = (unsigned int)active[p];
        info->numGpus = TABLE[p].num_gpus;
        for (unsigned int g = 0; g < TABLE[p].num_gpus; g++) {
            fmFabricPartitionGpuInfo_t *gpu = &info->gpuInfo[g];
            unsigned int module = TABLE[p].modules[g];
            gpu->physicalId = module;
            snprintf(gpu->uuid, sizeof gpu->uuid, "GPU-fake-%04u", module);
            snprintf(gpu->pciBusId, sizeof gpu->pciBusId, "%s", BUS_OF_MODULE[module]);
            gpu->numNvLinksAvailable = TABLE[p].num_gpus > 1 ? NVLINKS_PER_GPU : 0;
            gpu->maxNumNvLinks = NVLINKS_PER_GPU;
            gpu->nvlinkLineRateMBps = LINE_RATE_MBPS;
        }
    }
    if (bogus_partition_count >= 0)
        list->numPartitions = (unsigned int)bogus_partition_count;
    if (bogus_gpu_count >= 0)
        list->partitionInfo[0].numGpus = (unsigned int)bogus_gpu_count;
    return FM_ST_SUCCESS;
}

fmReturn_t fmActivateFabricPartition(fmHandle_t handle, fmFabricPartitionId_t id)
{
    fmReturn_t code;
    if ((code = precheck("fmActivateFabricPartition", handle)) != FM_ST_SUCCESS)
        return code;
    if (restart_pending)
        return FM_ST_NOT_CONFIGURED;
    int p = index_of(id);
    if (p < 0)
        return FM_ST_BADPARAM;
    for (int q = 0; q < NUM_PARTITIONS; q++)
        if (active[q] && overlaps(p, q))
            return FM_ST_IN_USE; /* also covers p itself being active */
    active[p] = 1;
    return FM_ST_SUCCESS;
}

fmReturn_t fmDeactivateFabricPartition(fmHandle_t handle, fmFabricPartitionId_t id)
{
    fmReturn_t code;
    if ((code = precheck("fmDeactivateFabricPartition", handle)) != FM_ST_SUCCESS)
        return code;
    if (restart_pending)
        return FM_ST_NOT_CONFIGURED;
    int p = index_of(id);
    if (p < 0)
        return FM_ST_BADPARAM;
    if (!active[p])
        return FM_ST_UNINITIALIZED;
    active[p] = 0;
    return FM_ST_SUCCESS;
}

fmReturn_t fmSetActivatedFabricPartitions(fmHandle_t handle,
                                          fmActivatedFabricPartitionList_v1 *list)
{
    fmReturn_t code;
    if ((code = precheck("fmSetActivatedFabricPartitions", handle)) != FM_ST_SUCCESS)
        return code;
    if (list == NULL)
        return FM_ST_BADPARAM;
    record_stamp("fmSetActivatedFabricPartitions", list->version);
    if (list->version != ACTIVATED_LIST_VERSION)
        return FM_ST_VERSION_MISMATCH;
    if (list->numPartitions > FM_MAX_FABRIC_PARTITIONS)
        return FM_ST_BADPARAM;
    int wanted[NUM_PARTITIONS] = {0};
    for (unsigned int i = 0; i < list->numPartitions; i++) {
        int p = index_of(list->partitionIds[i]);
        if (p < 0)
            return FM_ST_BADPARAM;
        for (int q = 0; q < NUM_PARTITIONS; q++)
            if (wanted[q] && overlaps(p, q))
                return FM_ST_IN_USE;
        wanted[p] = 1;
    }
    memcpy(active, wanted, sizeof active);
    restart_pending = 0;
    return FM_ST_SUCCESS;
}

fmReturn_t fmGetNvlinkFailedDevices(fmHandle_t handle, fmNvlinkFailedDevices_v1 *out)
{
    fmReturn_t code;
    if ((code = precheck("fmGetNvlinkFailedDevices", handle)) != FM_ST_SUCCESS)
        return code;
    if (out == NULL)
        return FM_ST_BADPARAM;
    record_stamp("fmGetNvlinkFailedDevices", out->version);
    if (out->version != FAILED_DEVICES_VERSION)
        return FM_ST_VERSION_MISMATCH;

    unsigned int version = out->version;
    memset(out, 0, sizeof *out);
    out->version = version;
    for (int kind = 0; kind < 2; kind++) {
        unsigned int limit = kind == 0 ? FM_MAX_NUM_GPUS : FM_MAX_NUM_NVSWITCHES;
        unsigned int n = 0;
        for (unsigned int i = 0; i < limit; i++) {
            if (!failed[kind][i].used)
                continue;
            fmNvlinkFailedDeviceInfo_t *dev = kind == 0 ? &out->gpuInfo[n] : &out->switchInfo[n];
            memcpy(dev->uuid, failed[kind][i].uuid, sizeof dev->uuid);
            memcpy(dev->pciBusId, failed[kind][i].bus, sizeof dev->pciBusId);
            dev->numPorts = failed[kind][i].num_ports;
            memcpy(dev->portNum, failed[kind][i].ports, sizeof dev->portNum);
            n++;
        }
        if (kind == 0)
            out->numGpus = n;
        else
            out->numSwitches = n;
    }
    return FM_ST_SUCCESS;
}

/* ---- test hooks ---- */

/* Forget everything: library uninitialised, no connections, nothing active or failed. */
void fake_reset(void)
{
    initialised = 0;
    restart_pending = 0;
    memset(active, 0, sizeof active);
    memset(handle_open, 0, sizeof handle_open);
    init_calls = shutdown_calls = connect_calls = disconnect_calls = 0;
    memset(last_address, 0, sizeof last_address);
    last_address_type = -1;
    last_timeout_ms = last_unix_flag = last_stamp = 0;
    last_stamp_function[0] = '\0';
    fail_armed = 0;
    bogus_partition_count = bogus_gpu_count = -1;
    memset(failed, 0, sizeof failed);
}

/* Make the next call of `function` (e.g. "fmConnect") return `code` without doing anything. */
void fake_fail_next(const char *function, int code)
{
    snprintf(fail_function, sizeof fail_function, "%s", function);
    fail_code = code;
    fail_armed = 1;
}

/* FM restarted with --restart: it forgot the active set and waits for it to be replayed. */
void fake_restart(void)
{
    restart_pending = 1;
    memset(active, 0, sizeof active);
}

/* Report numPartitions (and numGpus of the first partition) as these values; -1 = honest. */
void fake_set_bogus_counts(long partitions, long gpus)
{
    bogus_partition_count = partitions;
    bogus_gpu_count = gpus;
}

/* Add a failed NVLink port to a GPU (is_switch 0) or NVSwitch (1), keyed by uuid. */
int fake_add_failed_port(int is_switch, const char *uuid, const char *bus, unsigned int port)
{
    int kind = is_switch ? 1 : 0;
    unsigned int limit = is_switch ? FM_MAX_NUM_NVSWITCHES : FM_MAX_NUM_GPUS;
    for (unsigned int i = 0; i < limit; i++) {
        if (!failed[kind][i].used) {
            failed[kind][i].used = 1;
            snprintf(failed[kind][i].uuid, sizeof failed[kind][i].uuid, "%s", uuid);
            snprintf(failed[kind][i].bus, sizeof failed[kind][i].bus, "%s", bus);
        } else if (strcmp(failed[kind][i].uuid, uuid) != 0) {
            continue;
        }
        if (failed[kind][i].num_ports >= FM_MAX_NUM_NVLINK_PORTS)
            return -1;
        failed[kind][i].ports[failed[kind][i].num_ports++] = port;
        return 0;
    }
    return -1;
}

const char *fake_last_address(void) { return last_address; }
int fake_last_address_type(void) { return last_address_type; }
unsigned int fake_last_timeout_ms(void) { return last_timeout_ms; }
unsigned int fake_last_unix_flag(void) { return last_unix_flag; }
unsigned int fake_last_stamp(void) { return last_stamp; }
const char *fake_last_stamp_function(void) { return last_stamp_function; }
int fake_initialised(void) { return initialised; }
int fake_init_calls(void) { return init_calls; }
int fake_shutdown_calls(void) { return shutdown_calls; }
int fake_connect_calls(void) { return connect_calls; }
int fake_disconnect_calls(void) { return disconnect_calls; }

int fake_open_handles(void)
{
    int n = 0;
    for (int i = 0; i < MAX_HANDLES; i++)
        n += handle_open[i];
    return n;
}

/* Bit p set = partition with id p is active (ids of the default table are 0..14). */
unsigned long fake_active_mask(void)
{
    unsigned long mask = 0;
    for (int p = 0; p < NUM_PARTITIONS; p++)
        if (active[p])
            mask |= 1UL << TABLE[p].id;
    return mask;
}

/* ---- layout as this compiler sees it, for the Python side to compare against ---- */

#define SIZE(type) {#type, sizeof(type)}
static const struct {
    const char *name;
    size_t value;
} SIZES[] = {
    SIZE(fmConnectParams_v2),
    SIZE(fmFabricPartitionGpuInfo_t),
    SIZE(fmFabricPartitionInfo_t),
    SIZE(fmFabricPartitionList_v2),
    SIZE(fmActivatedFabricPartitionList_v1),
    SIZE(fmNvlinkFailedDeviceInfo_t),
    SIZE(fmNvlinkFailedDevices_v1),
};

#define OFFSET(type, field) {#type "." #field, offsetof(type, field)}
static const struct {
    const char *name;
    size_t value;
} OFFSETS[] = {
    OFFSET(fmConnectParams_v2, version),
    OFFSET(fmConnectParams_v2, addressInfo),
    OFFSET(fmConnectParams_v2, timeoutMs),
    OFFSET(fmConnectParams_v2, addressIsUnixSocket),
    OFFSET(fmConnectParams_v2, addressType),
    OFFSET(fmFabricPartitionGpuInfo_t, physicalId),
    OFFSET(fmFabricPartitionGpuInfo_t, uuid),
    OFFSET(fmFabricPartitionGpuInfo_t, pciBusId),
    OFFSET(fmFabricPartitionGpuInfo_t, numNvLinksAvailable),
    OFFSET(fmFabricPartitionGpuInfo_t, maxNumNvLinks),
    OFFSET(fmFabricPartitionGpuInfo_t, nvlinkLineRateMBps),
    OFFSET(fmFabricPartitionInfo_t, partitionId),
    OFFSET(fmFabricPartitionInfo_t, isActive),
    OFFSET(fmFabricPartitionInfo_t, numGpus),
    OFFSET(fmFabricPartitionInfo_t, gpuInfo),
    OFFSET(fmFabricPartitionList_v2, version),
    OFFSET(fmFabricPartitionList_v2, numPartitions),
    OFFSET(fmFabricPartitionList_v2, maxNumPartitions),
    OFFSET(fmFabricPartitionList_v2, partitionInfo),
    OFFSET(fmActivatedFabricPartitionList_v1, version),
    OFFSET(fmActivatedFabricPartitionList_v1, numPartitions),
    OFFSET(fmActivatedFabricPartitionList_v1, partitionIds),
    OFFSET(fmNvlinkFailedDeviceInfo_t, uuid),
    OFFSET(fmNvlinkFailedDeviceInfo_t, pciBusId),
    OFFSET(fmNvlinkFailedDeviceInfo_t, numPorts),
    OFFSET(fmNvlinkFailedDeviceInfo_t, portNum),
    OFFSET(fmNvlinkFailedDevices_v1, version),
    OFFSET(fmNvlinkFailedDevices_v1, numGpus),
    OFFSET(fmNvlinkFailedDevices_v1, numSwitches),
    OFFSET(fmNvlinkFailedDevices_v1, gpuInfo),
    OFFSET(fmNvlinkFailedDevices_v1, switchInfo),
};

/* sizeof(struct named `name`), or -1 if this file does not define it. */
long fake_sizeof(const char *name)
{
    for (size_t i = 0; i < sizeof SIZES / sizeof SIZES[0]; i++)
        if (strcmp(SIZES[i].name, name) == 0)
            return (long)SIZES[i].value;
    return -1;
}

/* offsetof for "struct.field", or -1 if unknown. */
long fake_offsetof(const char *name)
{
    for (size_t i = 0; i < sizeof OFFSETS / sizeof OFFSETS[0]; i++)
        if (strcmp(OFFSETS[i].name, name) == 0)
            return (long)OFFSETS[i].value;
    return -1;
}

/* The version stamps this file expects, e.g. "fmConnectParams_v2". */
unsigned int fake_expected_version(const char *name)
{
    if (strcmp(name, "fmConnectParams_v2") == 0)
        return CONNECT_PARAMS_VERSION;
    if (strcmp(name, "fmFabricPartitionList_v2") == 0)
        return PARTITION_LIST_VERSION;
    if (strcmp(name, "fmActivatedFabricPartitionList_v1") == 0)
        return ACTIVATED_LIST_VERSION;
    if (strcmp(name, "fmNvlinkFailedDevices_v1") == 0)
        return FAILED_DEVICES_VERSION;
    return 0;
}
