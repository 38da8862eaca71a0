// Every visible string of the page, in Chinese (the default: the screen of a 110 centre) and English.
// The choice is remembered in localStorage; a change re-renders whoever subscribed.

const KEY = "fieldhub.lang";
export const LANGS = ["zh-CN", "en"];

const zh = {
  "app.title": "一图指挥", "app.subtitle": "110 指挥中心",
  "login.title": "登录 fieldhub", "login.hint": "输入访问令牌（dispatcher、viewer ...）", "login.token": "访问令牌",
  "login.submit": "登录", "login.bad": "令牌无效或已撤销", "logout": "退出",
  "view.map": "一图指挥", "view.dashboard": "响应时效",
  "conn.connected": "实时", "conn.connecting": "连接中", "conn.offline": "离线",
  "search.placeholder": "搜索警力或警情…", "search.none": "无匹配结果",
  "layers": "图层", "layer.units": "警力", "layer.trails": "轨迹", "layer.incidents": "警情", "layer.heatmap": "热力图",
  "layer.overlays": "值守点/必巡线", "layer.alerts": "告警", "layer.drones": "无人机",
  "window.24h": "近24小时", "window.7d": "近7天", "window.30d": "近30天",
  "filters": "筛选", "filter.allStatus": "全部状态", "filter.allKinds": "全部类型", "filter.allCategories": "全部警情类别",
  "role.admin": "管理员", "role.dispatcher": "调度员", "role.viewer": "只读", "role.unknown": "未知角色",
  "role.drone_operator": "无人机飞手",
  "status.available": "空闲", "status.dispatched": "已派警", "status.acknowledged": "已签收", "status.en_route": "出警途中",
  "status.on_scene": "到场处置", "status.offline": "离线", "status.out_of_service": "停用", "status.cancelled": "已撤回",
  "status.cleared": "已结束", "status.open": "处置中", "status.closed": "已结案", "status.diverted": "已分流12345",
  "kind.patrol": "巡逻车", "kind.car": "警车", "kind.vehicle": "车辆", "kind.foot": "步巡", "kind.drone": "无人机",
  "kind.motorbike": "摩托", "kind.bodycam": "执法记录仪", "kind.camera": "机载相机", "kind.radio": "对讲机", "kind.phone": "手机",
  "ms.received": "接警", "ms.dispatched": "派警", "ms.acknowledged": "签收", "ms.departed": "出警", "ms.contacted": "联系",
  "ms.supported": "研判赋能", "ms.arrived": "到场", "ms.cleared": "结束",
  "src.device": "终端", "src.geofence": "电子围栏", "src.motion": "运动检测", "src.manual": "人工", "src.api": "接口",
  "src.system": "系统", "src.escalation": "升级",
  "prio.1": "一级", "prio.2": "二级", "prio.3": "三级", "prio.4": "四级",
  "prio.name.1": "1 · 紧急", "prio.name.2": "2 · 较急", "prio.name.3": "3 · 一般", "prio.name.4": "4 · 非紧急",
  "incidents.title": "处置中警情", "incidents.empty": "暂无处置中警情", "incidents.count": "{n} 起",
  "incident.sla": "时效目标", "incident.timeline": "处置时间轴", "incident.assignments": "已派警力",
  "incident.recommend": "推荐警力", "incident.recommend.none": "暂无可用警力", "incident.log": "记录",
  "incident.dispatch": "派警", "incident.contacted": "已联系当事人", "incident.supported": "研判赋能",
  "incident.close": "结案", "incident.divert": "分流12345", "incident.cancel": "撤回", "incident.note": "添加备注…",
  "incident.addNote": "备注", "incident.policy": "时效策略", "incident.zone": "到场范围 {r} 米",
  "incident.received": "接警于 {t}", "incident.age": "已 {d}", "incident.refresh": "刷新",
  "incident.confirmClose": "确认结案 {id}？", "incident.confirmDivert": "确认将 {id} 分流至 12345？",
  "incident.none": "未到达", "incident.eta": "预计 {t}", "incident.km": "{d} 公里", "incident.m": "{d} 米",
  "incident.closed": "警情已结案", "incident.noSla": "无时效目标",
  "chip.met": "达标", "chip.missed": "超时", "chip.left": "剩余",
  "new.title": "新建警情", "new.category": "类别", "new.priority": "等级", "new.summary": "简要警情",
  "new.address": "地址", "new.submit": "创建并推荐警力", "new.cancel": "取消", "new.created": "已创建警情 {id}",
  "new.where": "位置 {lat}, {lon}",
  "unit.title": "警力详情", "unit.devices": "终端设备", "unit.battery": "电量", "unit.lastFix": "最近定位",
  "unit.ago": "{d}前", "unit.noFix": "无定位", "unit.assignment": "当前任务", "unit.noAssignment": "无任务",
  "unit.track": "今日轨迹", "unit.hideTrack": "隐藏轨迹", "unit.trackPoints": "今日轨迹 {n} 个点",
  "unit.speed": "速度", "unit.heading": "航向", "unit.online": "在线", "unit.offlineDev": "离线", "unit.close": "关闭",
  "unit.stale": "定位过期",
  "alerts.title": "告警", "alerts.empty": "暂无告警",
  "alert.sos": "紧急求助", "alert.unacknowledged": "派警未签收", "alert.sla_breach": "时效超时",
  "alert.escalated": "改派", "alert.sla": "{id} {ms} 超时",
  "dash.title": "接处警响应时效", "dash.from": "从", "dash.to": "至", "dash.group": "分组", "dash.refresh": "查询",
  "dash.today": "今天", "dash.7d": "近7天", "dash.30d": "近30天",
  "dash.group.category": "按类别", "dash.group.unit": "按警力", "dash.group.policy": "按时效策略",
  "dash.compliance": "达标率（按节点）", "dash.times": "各节点用时 p50 / p90", "dash.sec": "秒", "dash.min": "分钟", "dash.incidents": "警情数",
  "dash.diverted": "分流 12345", "dash.handedOver": "已移交 {n}", "dash.overall": "合计", "dash.group.col": "分组",
  "dash.empty": "所选时段无数据", "dash.rate": "达标率", "dash.loading": "加载中…",
  "error.network": "网络错误：{m}", "error.heatmapMissing": "服务器暂不支持热力图",
  "toast.dispatched": "已派警 {u} → {id}", "toast.closed": "已结案 {id}", "toast.saved": "已记录",
  "legend": "图例", "eta.road": "路网", "eta.straight": "直线估算", "overlay.dutyPost": "值守点", "overlay.patrolLine": "必巡线", "dur.s": "{s}秒", "dur.m": "{m}分{s}秒", "dur.h": "{h}时{m}分", "dur.d": "{d}天{h}时",
  "log.created": "创建", "log.dispatched": "派警", "log.acknowledged": "签收", "log.departed": "出警",
  "log.contacted": "联系当事人", "log.supported": "研判赋能", "log.arrived": "到场", "log.cleared": "结束",
  "log.cancelled": "撤回", "log.reassigned": "改派", "log.note": "备注", "log.closed": "结案", "log.diverted": "分流12345",
  "log.handed_over": "已移交12345",
  "droneState.ready": "待命", "droneState.flying": "飞行中", "droneState.on_scene": "现场监视",
  "droneState.returning": "返航中", "droneState.offline": "离线", "droneState.unavailable": "不可用",
  "droneLink.ok": "正常", "droneLink.lost": "失联", "droneLink.unknown": "未知",
  "droneLink.refused_unsigned": "已拒绝（无签名密钥）", "droneLink.refused_bad_signature": "已拒绝（签名错误）",
  "droneSigning.signed": "已签名", "droneSigning.unsigned": "未签名（已明确允许）", "droneSigning.refused": "已拒绝：无密钥",
  "drone.signing": "签名", "drone.unsigned": "未签名",
  "drone.unsignedHint": "该无人机不使用 MAVLink 2 签名（机队配置中明确允许）：链路上任何人都可冒充它",
  "landed.on_ground": "在地面", "landed.takeoff": "起飞中", "landed.in_air": "空中", "landed.landing": "降落中",
  "drone.linkLost": "失联", "drone.link": "链路", "drone.mode": "飞行模式",
  "drone.armed.yes": "已解锁", "drone.armed.no": "未解锁", "drone.alt": "高度", "drone.dock": "机场",
  "drone.incident": "当前警情", "drone.commands": "飞行控制", "drone.goto": "飞往…", "drone.rtl": "返航",
  "drone.land": "降落", "drone.gotoAlt": "飞行高度（米）", "drone.pick": "在地图上点击目标位置（Esc 取消）",
  "drone.cmd.goto": "飞往", "drone.cmd.rtl": "返航", "drone.cmd.land": "降落",
  "drone.accepted": "{id}：{c}指令已接受", "drone.refused": "{id}：{c}被拒绝 — {m}",
  "drone.send": "派无人机", "drone.sent": "已派 {id} → {inc} · {d}", "drone.noneAvailable": "无可用无人机：{m}",
  "droneState.launching": "起飞中", "droneState.refused_unsigned": "已拒绝（未签名）",
  "droneState.signed_no_key": "已签名·无密钥", "droneState.no_telemetry": "无遥测", "droneState.not_ready": "自检未通过",
  "droneState.landed_away": "降落在机场外", "droneState.no_failsafe": "无失联保护",
  "droneLink.signed_no_key": "已签名，中心无密钥（指令被丢弃）",
  "drone.failsafe": "失联保护", "drone.failsafe.ok": "已启用", "drone.failsafe.none": "无",
  "drone.prearm": "起飞前自检", "drone.prearm.ok": "通过", "drone.prearm.failing": "未通过", "drone.prearm.unknown": "未上报",
  "drone.telemetry": "遥测", "drone.telemetry.ok": "正常（{n}/{of} 类消息）",
  "drone.home.atDock": "返航点在机场", "drone.home.away": "返航点距机场 {d} 米", "drone.home.unknown": "返航点未知",
  "drone.clock": "时钟偏差", "drone.reboots": "重启 {n} 次", "drone.staleFix": "定位过期",
  "drone.mission": "任务", "drone.progress": "航点 {c}/{n}",
  "missionKind.dispatch": "出警", "missionKind.goto": "飞往", "missionKind.rtl": "返航",
  "missionKind.return_to_dock": "返回机场", "missionKind.mission": "航线任务",
  "drone.texts": "飞控消息", "drone.action.return_to_dock": "返回机场", "drone.action.enable_failsafe": "启用失联保护",
  "drone.noneAvailableTitle": "无可用无人机，原因：", "drone.override": "不带失联保护派出…",
  "drone.override.confirm": "确认派出 {id}（无失联保护）",
  "drone.override.warning": "{id} 没有有效的失联保护：链路中断后它不会自行返航（原因见上）。此操作将记入警情日志。",
  "drone.sentWithoutFailsafe": "无失联保护（人工确认）",
  "video.title": "实时视频", "video.watch": "视频 {d}", "video.wall": "视频墙", "video.wallOf": "视频墙 ·",
  "video.none": "该警情暂无实时视频", "video.more": "另有 {n} 路未显示（最多同时 {max} 路）", "video.close": "关闭视频",
  "video.connecting": "连接中…", "video.refused": "无法播放：{m}", "video.stalled": "信号中断，等待恢复…",
  "video.connFailed": "连接失败", "video.connClosed": "连接已关闭", "video.noMedia": "未收到视频画面",
  "video.ended": "视频已结束", "video.age": "已回传 {d}", "video.gone": "视频 {id} 已结束",
  "video.tooMany": "最多同时播放 {n} 路视频，请先关闭一路", "video.started": "视频回传：{u}（警情 {inc}）",
  "video.badge": "实时视频", "video.live": "视频", "video.notStarted": "视频 {id} 未能开始",
  "camera.live": "调看", "camera.liveTitle": "呼叫该摄像机，打开其实时视频", "camera.opening": "呼叫中…",
  "camera.refused": "无法调看 {d}：{m}",
  "lang.switch": "EN",
};

const en = {
  "app.title": "One-map command", "app.subtitle": "110 command centre",
  "login.title": "Sign in to fieldhub", "login.hint": "Enter an access token (dispatcher, viewer ...)",
  "login.token": "Access token", "login.submit": "Sign in", "login.bad": "Unknown or revoked token", "logout": "Sign out",
  "view.map": "Command map", "view.dashboard": "Response times",
  "conn.connected": "Live", "conn.connecting": "Connecting", "conn.offline": "Offline",
  "search.placeholder": "Search units or incidents…", "search.none": "No match",
  "layers": "Layers", "layer.units": "Units", "layer.trails": "Trails", "layer.incidents": "Incidents",
  "layer.heatmap": "Heatmap", "layer.overlays": "Posts/patrol lines", "layer.alerts": "Alerts",
  "layer.drones": "Drones",
  "window.24h": "Last 24 h", "window.7d": "Last 7 days", "window.30d": "Last 30 days",
  "filters": "Filters", "filter.allStatus": "All statuses", "filter.allKinds": "All kinds",
  "filter.allCategories": "All categories",
  "role.admin": "Admin", "role.dispatcher": "Dispatcher", "role.viewer": "Viewer", "role.unknown": "Unknown role",
  "role.drone_operator": "Drone operator",
  "status.available": "Available", "status.dispatched": "Dispatched", "status.acknowledged": "Acknowledged",
  "status.en_route": "En route", "status.on_scene": "On scene", "status.offline": "Offline",
  "status.out_of_service": "Out of service", "status.cancelled": "Cancelled", "status.cleared": "Cleared",
  "status.open": "Open", "status.closed": "Closed", "status.diverted": "Diverted to 12345",
  "kind.patrol": "Patrol car", "kind.car": "Car", "kind.vehicle": "Vehicle", "kind.foot": "On foot", "kind.drone": "Drone",
  "kind.motorbike": "Motorbike", "kind.bodycam": "Body camera", "kind.camera": "Camera", "kind.radio": "Radio", "kind.phone": "Phone",
  "ms.received": "Received", "ms.dispatched": "Dispatched", "ms.acknowledged": "Acknowledged", "ms.departed": "Departed",
  "ms.contacted": "Contacted", "ms.supported": "Supported", "ms.arrived": "Arrived", "ms.cleared": "Cleared",
  "src.device": "device", "src.geofence": "geofence", "src.motion": "motion", "src.manual": "manual", "src.api": "API",
  "src.system": "system", "src.escalation": "escalation",
  "prio.1": "P1", "prio.2": "P2", "prio.3": "P3", "prio.4": "P4",
  "prio.name.1": "1 · Critical", "prio.name.2": "2 · Urgent", "prio.name.3": "3 · Normal", "prio.name.4": "4 · Low",
  "incidents.title": "Open incidents", "incidents.empty": "No open incidents", "incidents.count": "{n}",
  "incident.sla": "Response targets", "incident.timeline": "Timeline", "incident.assignments": "Assigned units",
  "incident.recommend": "Recommended units", "incident.recommend.none": "No unit available",
  "incident.log": "Log", "incident.dispatch": "Dispatch", "incident.contacted": "Contacted",
  "incident.supported": "Supported", "incident.close": "Close", "incident.divert": "Divert to 12345",
  "incident.cancel": "Withdraw", "incident.note": "Add a note…", "incident.addNote": "Note",
  "incident.policy": "Policy", "incident.zone": "arrival zone {r} m", "incident.received": "received {t}",
  "incident.age": "{d} ago", "incident.refresh": "Refresh", "incident.confirmClose": "Close {id}?",
  "incident.confirmDivert": "Divert {id} to the 12345 hotline?", "incident.none": "not yet",
  "incident.eta": "ETA {t}", "incident.km": "{d} km", "incident.m": "{d} m", "incident.closed": "Incident closed",
  "incident.noSla": "No response targets",
  "chip.met": "met", "chip.missed": "missed", "chip.left": "left",
  "new.title": "New incident", "new.category": "Category", "new.priority": "Priority", "new.summary": "Summary",
  "new.address": "Address", "new.submit": "Create and recommend", "new.cancel": "Cancel",
  "new.created": "Incident {id} created", "new.where": "at {lat}, {lon}",
  "unit.title": "Unit", "unit.devices": "Devices", "unit.battery": "Battery", "unit.lastFix": "Last fix",
  "unit.ago": "{d} ago", "unit.noFix": "no fix", "unit.assignment": "Assignment", "unit.noAssignment": "none",
  "unit.track": "Today's track", "unit.hideTrack": "Hide track", "unit.trackPoints": "today's track: {n} fixes",
  "unit.speed": "Speed", "unit.heading": "Heading", "unit.online": "online", "unit.offlineDev": "offline",
  "unit.close": "Close", "unit.stale": "stale fix",
  "alerts.title": "Alerts", "alerts.empty": "No alerts",
  "alert.sos": "SOS", "alert.unacknowledged": "Dispatch not acknowledged", "alert.sla_breach": "Target missed",
  "alert.escalated": "Reassigned", "alert.sla": "{id}: {ms} target missed",
  "dash.title": "Response times", "dash.from": "From", "dash.to": "To", "dash.group": "Group by",
  "dash.refresh": "Show", "dash.today": "Today", "dash.7d": "7 days", "dash.30d": "30 days",
  "dash.group.category": "Category", "dash.group.unit": "Unit", "dash.group.policy": "Policy",
  "dash.compliance": "Compliance per milestone", "dash.times": "p50 / p90 per milestone", "dash.sec": "seconds", "dash.min": "minutes",
  "dash.incidents": "Incidents", "dash.diverted": "Diverted to 12345", "dash.handedOver": "{n} handed over",
  "dash.overall": "All", "dash.group.col": "Group", "dash.empty": "No incidents in this period",
  "dash.rate": "compliance", "dash.loading": "Loading…",
  "error.network": "Network error: {m}", "error.heatmapMissing": "This hub has no heatmap report yet",
  "toast.dispatched": "Dispatched {u} to {id}", "toast.closed": "Closed {id}", "toast.saved": "Recorded",
  "legend": "Legend", "eta.road": "by road", "eta.straight": "straight line", "overlay.dutyPost": "Duty post", "overlay.patrolLine": "Patrol line", "dur.s": "{s}s", "dur.m": "{m}m {s}s", "dur.h": "{h}h {m}m", "dur.d": "{d}d {h}h",
  "log.created": "created", "log.dispatched": "dispatched", "log.acknowledged": "acknowledged",
  "log.departed": "departed", "log.contacted": "contacted", "log.supported": "supported", "log.arrived": "arrived",
  "log.cleared": "cleared", "log.cancelled": "withdrawn", "log.reassigned": "reassigned", "log.note": "note",
  "log.closed": "closed", "log.diverted": "diverted to 12345", "log.handed_over": "handed over to 12345",
  "droneState.ready": "Ready", "droneState.flying": "Flying", "droneState.on_scene": "On scene",
  "droneState.returning": "Returning", "droneState.offline": "Offline", "droneState.unavailable": "Unavailable",
  "droneLink.ok": "ok", "droneLink.lost": "lost", "droneLink.unknown": "unknown",
  "droneLink.refused_unsigned": "refused (no signing key)", "droneLink.refused_bad_signature": "refused (bad signature)",
  "droneSigning.signed": "signed", "droneSigning.unsigned": "unsigned (opted in)", "droneSigning.refused": "refused: no key",
  "drone.signing": "Signing", "drone.unsigned": "UNSIGNED",
  "drone.unsignedHint": "Flies without MAVLink 2 signing (opted in by its fleet entry): anyone on its link can speak for it",
  "landed.on_ground": "on the ground", "landed.takeoff": "taking off", "landed.in_air": "in the air",
  "landed.landing": "landing",
  "drone.linkLost": "LINK LOST", "drone.link": "Link", "drone.mode": "Mode",
  "drone.armed.yes": "armed", "drone.armed.no": "disarmed", "drone.alt": "Altitude", "drone.dock": "Dock",
  "drone.incident": "Incident", "drone.commands": "Flight control", "drone.goto": "Go to…", "drone.rtl": "Return",
  "drone.land": "Land", "drone.gotoAlt": "Altitude (m)", "drone.pick": "Click the map where the drone should go (Esc cancels)",
  "drone.cmd.goto": "go to", "drone.cmd.rtl": "return", "drone.cmd.land": "land",
  "drone.accepted": "{id}: {c} accepted", "drone.refused": "{id}: {c} refused — {m}",
  "drone.send": "Send drone", "drone.sent": "Sent {id} to {inc} · {d}", "drone.noneAvailable": "No drone available: {m}",
  "droneState.launching": "Launching", "droneState.refused_unsigned": "Refused (unsigned)",
  "droneState.signed_no_key": "Signed, no key", "droneState.no_telemetry": "No telemetry",
  "droneState.not_ready": "Not ready", "droneState.landed_away": "Landed away", "droneState.no_failsafe": "No link failsafe",
  "droneLink.signed_no_key": "signed, no key (commands dropped)",
  "drone.failsafe": "Link failsafe", "drone.failsafe.ok": "on", "drone.failsafe.none": "none",
  "drone.prearm": "Pre-arm", "drone.prearm.ok": "passing", "drone.prearm.failing": "failing",
  "drone.prearm.unknown": "not reported",
  "drone.telemetry": "Telemetry", "drone.telemetry.ok": "ok ({n}/{of} messages)",
  "drone.home.atDock": "home on it", "drone.home.away": "home {d} m from it",
  "drone.home.unknown": "home unknown",
  "drone.clock": "Clock offset", "drone.reboots": "{n} reboots", "drone.staleFix": "stale fix",
  "drone.mission": "Mission", "drone.progress": "item {c}/{n}",
  "missionKind.dispatch": "dispatch", "missionKind.goto": "go to", "missionKind.rtl": "return to launch",
  "missionKind.return_to_dock": "return to dock", "missionKind.mission": "mission",
  "drone.texts": "Autopilot messages", "drone.action.return_to_dock": "Return to dock",
  "drone.action.enable_failsafe": "Enable failsafe",
  "drone.noneAvailableTitle": "No drone available:", "drone.override": "Send without failsafe…",
  "drone.override.confirm": "Send {id} without failsafe",
  "drone.override.warning": "{id} has no working link failsafe: if the link is lost it will not come back by itself (the reason is above). The override is logged in the incident.",
  "drone.sentWithoutFailsafe": "without link failsafe (override)",
  "video.title": "Live video", "video.watch": "Video {d}", "video.wall": "Video wall", "video.wallOf": "Video wall ·",
  "video.none": "No live video for this incident yet", "video.more": "{n} more not shown (at most {max} at once)",
  "video.close": "Close video", "video.connecting": "Connecting…", "video.refused": "Cannot play: {m}",
  "video.stalled": "Signal lost, waiting…", "video.connFailed": "Connection failed", "video.connClosed": "Connection closed",
  "video.noMedia": "No picture received", "video.ended": "Stream ended", "video.age": "live {d}",
  "video.gone": "Stream {id} has ended", "video.tooMany": "At most {n} videos at once: close one first",
  "video.started": "Live video: {u} (incident {inc})", "video.badge": "Live video", "video.live": "LIVE",
  "video.notStarted": "Stream {id} did not start",
  "camera.live": "Live", "camera.liveTitle": "Call this camera and open its live video", "camera.opening": "Calling…",
  "camera.refused": "Cannot open {d}: {m}",
  "lang.switch": "中文",
};

// Categories of calls: the simulator's mix and the usual 110 ones. Unknown categories show raw.
const CATEGORIES = {
  theft: ["盗窃", "Theft"], robbery: ["抢劫", "Robbery"], assault: ["伤害/殴打", "Assault"],
  traffic_accident: ["交通事故", "Traffic accident"], fire: ["火灾", "Fire"], medical: ["医疗急救", "Medical"],
  missing_person: ["走失人员", "Missing person"], dispute: ["纠纷", "Dispute"], noise: ["噪音扰民", "Noise"],
  sos: ["紧急求助", "SOS"], consultation: ["咨询", "Consultation"], burglary: ["入室盗窃", "Burglary"],
  fraud: ["诈骗", "Fraud"], suspicious_person: ["可疑人员", "Suspicious person"],
  domestic_violence: ["家庭暴力", "Domestic violence"], consumer_dispute: ["消费纠纷", "Consumer dispute"],
  labour_dispute: ["劳资纠纷", "Labour dispute"], drunk: ["醉酒", "Drunk person"], other: ["其他", "Other"],
};
export const KNOWN_CATEGORIES = Object.keys(CATEGORIES);

const DICTS = { "zh-CN": zh, en };
const listeners = new Set();
let lang = initialLang();

function initialLang() {
  try {
    const saved = localStorage.getItem(KEY);
    if (LANGS.includes(saved)) return saved;
  } catch { /* storage disabled: the default it is */ }
  return "zh-CN";
}

export function currentLang() { return lang; }

export function setLang(next) {
  if (!LANGS.includes(next) || next === lang) return;
  lang = next;
  try { localStorage.setItem(KEY, next); } catch { /* not remembered, still switched */ }
  document.documentElement.lang = next;
  translateStatic(document);
  for (const fn of listeners) fn(next);
}

export function onLangChange(fn) { listeners.add(fn); }

/** The string for `key` with `{name}` placeholders filled; the key itself when nobody wrote it. */
export function t(key, params) {
  let s = DICTS[lang][key] ?? en[key] ?? key;
  if (params) for (const [k, v] of Object.entries(params)) s = s.replaceAll(`{${k}}`, String(v));
  return s;
}

/** `prefix.value` translated, or the raw value when there is no entry (new statuses, kinds...). */
export function term(prefix, value) {
  if (value == null) return "";
  const key = `${prefix}.${value}`;
  return DICTS[lang][key] ?? en[key] ?? String(value).replace(/_/g, " ");
}

export function categoryName(category) {
  const names = CATEGORIES[category];
  if (!names) return String(category ?? "");
  return lang === "en" ? names[1] : names[0];
}

/** Fill `[data-i18n]` (text) and `[data-i18n-placeholder]` / `[data-i18n-title]` under `root`. */
export function translateStatic(root) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of root.querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
}

document.documentElement.lang = lang;
