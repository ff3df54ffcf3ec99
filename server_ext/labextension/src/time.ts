// Times as people read them: "just now", "12 s", "2 min ago", "3 h ago" (never raw ms).

/** A length of time in seconds: "0.4 s", "12 s", "2 min", "1 h 5 min", "2 d 3 h". */
export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '–';
  }
  const s = Math.max(0, seconds);
  if (s < 1) {
    return `${s.toFixed(1)} s`;
  }
  if (s < 60) {
    return `${Math.floor(s)} s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min`;
  }
  if (s < 86400) {
    const m = Math.floor((s % 3600) / 60);
    return `${Math.floor(s / 3600)} h${m ? ` ${m} min` : ''}`;
  }
  const h = Math.floor((s % 86400) / 3600);
  return `${Math.floor(s / 86400)} d${h ? ` ${h} h` : ''}`;
}

/** How long ago, in seconds: "just now" under 5 s, then "12 s ago", "2 min ago", "3 h ago". */
export function ago(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return 'never';
  }
  return seconds < 5 ? 'just now' : `${duration(seconds).split(' ').slice(0, 2).join(' ')} ago`;
}

/** How long ago a wall-clock time (epoch seconds) was, by this browser's clock. */
export function agoFrom(epochSeconds: number | null | undefined): string {
  if (!epochSeconds) {
    return 'never';
  }
  return ago(Date.now() / 1000 - epochSeconds);
}

/** A byte count: "512 B", "45 MB", "1.2 GB". */
export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) {
    return '–';
  }
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 && unit ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}
