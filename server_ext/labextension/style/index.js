import './index.css';
import './outputs.css';
